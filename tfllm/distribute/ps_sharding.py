"""Keras 3 variables split over parameter servers, made trainable and checkpointable.

Under `ParameterServerStrategy(variable_partitioner=...)` a large Keras
variable (the token embedding / tied LM head) holds a `ShardedVariable`: one
`tf.Variable` per parameter server. Two things then fail in Keras 3 (measured,
DESIGN §2): `tape.gradient` / Keras optimizers on the Keras variable
("'ShardedVariable' object has no attribute 'handle'"), and
`tf.train.Checkpoint.save` ("'ShardedVariable' object has no attribute
'device'", because Keras' `_serialize_to_tensors` falls back to saving the
value whole). This module works around both, and nothing else:

- `expand_sharded` lists the shard `tf.Variable`s in place of their Keras
  variable, so gradients and optimizer updates go to each shard (on its ps);
- `make_checkpointable` has each shard saved as a slice of the full variable
  (the `SaveSliceInfo` convention of TensorFlow's partitioned variables), so
  the checkpoint is layout-free: it restores into an unsharded model on one
  device, and an unsharded checkpoint restores into the shards.
"""

from __future__ import annotations

import tensorflow as tf

# The class has no public name; this is its only import in tfllm.
from tensorflow.python.distribute.sharded_variable import ShardedVariable


def shards_of(variable) -> list[tf.Variable] | None:
    """The shard variables behind a Keras (or tf) variable; None if it is not sharded."""
    value = getattr(variable, "value", variable)
    if isinstance(value, ShardedVariable):
        return list(value.variables)
    return None


def expand_sharded(variables: list) -> list:
    """`variables` with every sharded variable replaced by its shards, in order."""
    out = []
    for variable in variables:
        out.extend(shards_of(variable) or [variable])
    return out


def sharded_summary(variables: list) -> dict[str, int]:
    """{variable path: shard count} of the sharded ones (for metrics and tests)."""
    return {
        getattr(v, "path", v.name): len(shards_of(v)) for v in variables if shards_of(v) is not None
    }


def make_checkpointable(variables: list) -> int:
    """Lets `tf.train.Checkpoint` save and restore sharded Keras variables; returns how many.

    Each such variable instance is moved to a subclass of its own class that
    hands checkpointing to the `ShardedVariable` inside, which saves one
    slice per shard (`SaveSliceInfo`). The subclass defines only the legacy
    `_gather_saveables_for_checkpoint`, because TensorFlow 2.21's restore path
    for `_serialize_to_tensors` passes a single slice back (measured: the
    second shard is never restored). Every other variable keeps Keras' own
    behaviour.
    """
    patched = 0
    for variable in variables:
        if shards_of(variable) is None:
            continue
        variable.__class__ = _checkpointable_class(type(variable))
        patched += 1
    return patched


_CLASSES: dict[type, type] = {}


def _checkpointable_class(cls: type) -> type:
    if cls not in _CLASSES:

        def _gather_saveables_for_checkpoint(self):
            return self.value._gather_saveables_for_checkpoint()  # noqa: SLF001

        _CLASSES[cls] = type(
            f"Sharded{cls.__name__}",
            (cls,),
            {"_gather_saveables_for_checkpoint": _gather_saveables_for_checkpoint},
        )
    return _CLASSES[cls]
