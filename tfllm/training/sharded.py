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
- `make_checkpointable` saves each shard as a slice of the full variable (the
  `SaveSliceInfo` convention TensorFlow uses for partitioned variables), so
  the checkpoint is layout-free: it restores into an unsharded model on one
  device, or into a different number of shards.
"""

from __future__ import annotations

import tensorflow as tf

# The class has no public name; this is its only import in tfllm.
from tensorflow.python.distribute.sharded_variable import ShardedVariable

VALUE_KEY = "VARIABLE_VALUE"  # the key every tf.Variable is saved under


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


def _slice_specs(full_shape: list[int], shards: list[tf.Variable], name: str) -> list[str]:
    """TensorFlow's slice spec of each shard (shards split axis 0, in order)."""
    specs, offset = [], 0
    for shard in shards:
        info = tf.Variable.SaveSliceInfo(
            full_name=name,
            full_shape=full_shape,
            var_offset=[offset] + [0] * (len(full_shape) - 1),
            var_shape=shard.shape.as_list(),
        )
        specs.append(info.spec)
        offset += int(shard.shape[0])
    return specs


def make_checkpointable(variables: list) -> int:
    """Lets `tf.train.Checkpoint` save and restore sharded Keras variables; returns how many.

    Replaces `_serialize_to_tensors` / `_restore_from_tensors` on those
    variable *instances* only (the checkpoint API looks them up per object),
    so every other variable keeps Keras' own behaviour.
    """
    patched = 0
    for variable in variables:
        shards = shards_of(variable)
        if shards is None:
            continue
        full_shape = variable.value.shape.as_list()
        specs = _slice_specs(full_shape, shards, getattr(variable, "path", variable.name))

        def serialize(shards=shards, specs=specs):
            return {
                VALUE_KEY: {spec: s.read_value() for spec, s in zip(specs, shards, strict=True)}
            }

        def restore(restored, shards=shards, specs=specs):
            value = restored[VALUE_KEY]
            if not isinstance(value, dict):  # saved whole (one device): split it here
                sizes = [int(s.shape[0]) for s in shards]
                value = dict(zip(specs, tf.split(value, sizes, axis=0), strict=True))
            return tf.group(
                [s.assign(value[spec]) for spec, s in zip(specs, shards, strict=True)]
            )

        variable._serialize_to_tensors = serialize  # noqa: SLF001
        variable._restore_from_tensors = restore  # noqa: SLF001
        patched += 1
    return patched
