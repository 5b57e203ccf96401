"""LoRA (Hu et al., 2021) on any tfllm model, by layer name, with Keras 3's `enable_lora`.

Why by name and not per family: every transformer family here (the GPT and a
GPT-2 import, Llama, the BERT encoder and the classifiers built on these
blocks) projects through Keras `Dense` / `EinsumDense` layers whose own names
say what they are (`query`, `key`, `value`, `attention_output`; the MLP's
`feedforward_*_dense` or Llama's `gate` / `up` / `down`, listed in
`tfllm.config.names`). So one walk over a model's layers finds the kernels
`config.train.lora_targets` names, and a new family made of these layers needs
no LoRA code.

Each target gets a float32 `lora_kernel_a` (He-uniform) and `lora_kernel_b`
(zeros, so the adapted model starts as the base model), and computes with
`W + alpha / rank · A·B`. Dense kernels and EinsumDense kernels whose output
is one axis (the MLP's; `attention_output`'s `[heads, head_dim, d]` → `d`)
use Keras 3's own `layer.enable_lora`, which is the paper's LoRA there. Keras
factors only a kernel's *last* axis, though (A `kernel.shape[:-1] + (r,)`, B
`(r, kernel.shape[-1])`), so for the multi-head projections `query`/`key`/
`value` (`[d, heads, head_dim]`) it would make a per-head rank-r update with
B shared across heads: a different, larger parametrization (MiniLM at rank 8
on `all`: 0.89 M adapter weights, 3.8 % of the model). Those kernels get the
paper's shape instead, A `[d, r]` and B `[r, heads, head_dim]` (0.33 M for
MiniLM), through `_PaperLora`, a subclass that overrides Keras' `kernel`
(`config.train.lora_factorization=paper`, the default; `keras` keeps Keras'
form, which LoRA runs saved before the key existed used).

Every other weight is frozen (`variable.trainable = False`), except a
classifier's task head: the variables outside `model.backbone_layers()`, or
`model.head`'s. The optimizer is built on the
trainable variables, so it holds slots for the adapters (and head) only.

Where it is not used: embeddings. `keras.layers.Embedding` has `enable_lora`,
but the GPT and Llama token tables are keras-hub `ReversibleEmbedding`s that
also serve as the tied LM head (`reverse=True` reads the raw table), so
adapting them would change the logits through a path LoRA's merge does not
cover; like the LoRA paper (and PEFT's defaults), embeddings and norms stay
frozen and unadapted. Keras-quantized (int8/int4) kernels are never adapted
(a LoRA run trains a float model; a quantized workdir is refused upstream).

`merge_lora` folds the adapters into the kernels and removes them, leaving the
plain model the family always had: what `tfllm.inference.loading.load_trained`
hands to evaluation, generation and every export, so exported artifacts need
nothing new at run time. `base_weights_only` hides the adapters for a moment,
so a checkpoint written without them (`train.init_from`) restores into an
adapted model; `tf.train.Checkpoint` would otherwise refuse the adapters as
objects the checkpoint lacks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import ml_collections
import tensorflow as tf

from tfllm.config.names import LORA_TARGET_GROUPS, LORA_TARGETS
from tfllm.errors import ConfigError

_ADAPTERS = ("lora_kernel_a", "lora_kernel_b")


@dataclass(frozen=True)
class LoraSettings:
    """`config.train`'s LoRA keys, resolved: rank (0 = off), alpha, target layer names."""

    rank: int
    alpha: float
    targets: tuple[str, ...]  # the tokens as written (groups or layer names)
    factorization: str = "paper"  # or "keras" (module docstring)

    @property
    def layer_names(self) -> frozenset[str]:
        names: set[str] = set()
        for token in self.targets:
            names.update(LORA_TARGET_GROUPS.get(token, (token,)))
        return frozenset(names)


def lora_settings(train: ml_collections.ConfigDict) -> LoraSettings:
    """The LoRA settings of a `config.train` (defaults for configs saved before LoRA)."""
    rank = int(train.get("lora_rank", 0))
    alpha = float(train.get("lora_alpha", 0.0)) or float(rank)
    spec = str(train.get("lora_targets", "attention"))
    targets = tuple(t.strip() for t in spec.split(",") if t.strip())
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if rank and (unknown or not targets):
        raise ConfigError(
            f"config.train.lora_targets: {spec!r} names no known target "
            f"(one of {', '.join(LORA_TARGETS)})"
        )
    return LoraSettings(rank, alpha, targets, str(train.get("lora_factorization", "keras")))


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False))  # noqa: SLF001 (Keras' own walk)


def _is_kernel_layer(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def _head_variables(model: keras.Model) -> list:
    """A classifier's task head (trained in full under LoRA); [] for a language model."""
    backbone = getattr(model, "backbone_layers", None)
    if backbone is not None:
        inside = {id(v) for layer in backbone() for v in layer.variables}
        return [v for v in model.variables if id(v) not in inside]
    head = getattr(model, "head", None)
    return list(head.variables) if isinstance(head, keras.layers.Layer) else []


def _candidate_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Dense/EinsumDense layers LoRA may adapt: in the backbone (never a classifier's head)."""
    backbone = getattr(model, "backbone_layers", None)
    if backbone is None:
        layers = _layers(model)
    else:
        layers = []
        for top in backbone():
            layers += [top, *top._flatten_layers(include_self=False)]  # noqa: SLF001
    return [layer for layer in layers if _is_kernel_layer(layer)]


def apply_lora(model: keras.Model, settings: LoraSettings) -> list[str]:
    """Freezes `model` and puts rank-`settings.rank` adapters on the target kernels.

    Returns the adapted layers' paths. Raises ConfigError (one line, naming
    `config.train.lora_targets`) when a target matches no layer of this model.
    Call on a built model, under the strategy scope that will train it.
    """
    if not settings.rank:
        return []
    candidates = _candidate_layers(model)
    present = {layer.name for layer in candidates}
    for token in settings.targets:
        wanted = set(LORA_TARGET_GROUPS.get(token, (token,)))
        if not wanted & present:
            have = ", ".join(n for n in LORA_TARGETS if n in present) or "none"
            raise ConfigError(
                f"config.train.lora_targets: {token!r} matches no layer of this "
                f"{type(model).__name__} (its adaptable layers: {have})"
            )
    names = settings.layer_names
    targets = [layer for layer in candidates if layer.name in names]
    for layer in targets:
        if getattr(layer, "quantization_mode", None):
            raise ConfigError(
                f"config.train.lora_rank: {layer.path} holds a Keras-quantized kernel; LoRA "
                "adapts float kernels (train the float source instead)"
            )
    head = {id(v) for v in _head_variables(model)}
    for variable in model.variables:
        if id(variable) not in head:
            variable.trainable = False
    for layer in targets:
        inputs = _input_axes(layer) if settings.factorization == "paper" else None
        if inputs is None:
            layer.enable_lora(settings.rank, lora_alpha=settings.alpha)
        else:
            _enable_paper_lora(layer, settings.rank, settings.alpha, inputs)
    return [layer.path for layer in targets]


def _input_axes(layer: keras.layers.Layer) -> int | None:
    """For an EinsumDense kernel laid out `[input axes..., output axes...]` with more
    than one output axis (`btd,dhk->bthk`: 1), how many leading axes are the
    input's; None where Keras' last-axis factorization is already the paper's."""
    if not isinstance(layer, keras.layers.EinsumDense):
        return None
    operands, output = layer.equation.split("->")
    kernel = operands.split(",")[1]
    inputs = sum(axis not in output for axis in kernel)
    if len(kernel) - inputs < 2 or any(axis in output for axis in kernel[:inputs]):
        return None
    return inputs


class _PaperLora:
    """Mixin over an EinsumDense class: `kernel` adds A·B contracted over the rank
    (A `[inputs..., r]`, B `[r, outputs...]`) where Keras' property would
    `matmul` them, which only fits its own last-axis shapes."""

    @property
    def kernel(self):
        if not self.lora_enabled:
            return super().kernel
        delta = keras.ops.tensordot(self.lora_kernel_a, self.lora_kernel_b, axes=1)
        scale = self.lora_alpha / self.lora_rank
        return keras.ops.cast(self._kernel + scale * delta, self.compute_dtype)


_PAPER_CLASSES: dict[type, type] = {}


def _enable_paper_lora(layer: keras.layers.Layer, rank: int, alpha: float, inputs: int) -> None:
    """What `enable_lora` does, with paper-shaped adapters and `_PaperLora`'s kernel."""
    cls = type(layer)
    if cls not in _PAPER_CLASSES:
        _PAPER_CLASSES[cls] = type(f"PaperLora{cls.__name__}", (_PaperLora, cls), {})
    shape = tuple(layer._kernel.shape)  # noqa: SLF001 (the base variable, as enable_lora)
    layer._tracker.unlock()  # noqa: SLF001 (as Keras' enable_lora does)
    layer.lora_kernel_a = layer.add_weight(
        name="lora_kernel_a", shape=shape[:inputs] + (rank,), initializer="he_uniform",
        dtype="float32",
    )  # fmt: skip
    layer.lora_kernel_b = layer.add_weight(
        name="lora_kernel_b", shape=(rank,) + shape[inputs:], initializer="zeros", dtype="float32"
    )
    layer._kernel.trainable = False  # noqa: SLF001
    layer._tracker.lock()  # noqa: SLF001
    layer.lora_enabled, layer.lora_rank, layer.lora_alpha = True, rank, alpha
    # The class, not the instance: Python looks properties up on the type.
    object.__setattr__(layer, "__class__", _PAPER_CLASSES[cls])


def lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` that carry adapters now."""
    return [layer for layer in _layers(model) if getattr(layer, "lora_enabled", False)]


def adapter_variables(model: keras.Model) -> list:
    """Every adapter variable (A and B of each adapted layer)."""
    return [getattr(layer, name) for layer in lora_layers(model) for name in _ADAPTERS]


def _detach(layer: keras.layers.Layer) -> tuple:
    """Removes a layer's adapters from Keras' and TensorFlow's tracking; returns them."""
    adapters = tuple(getattr(layer, name) for name in _ADAPTERS)
    for name, variable in zip(_ADAPTERS, adapters, strict=True):
        layer._untrack_variable(variable)  # noqa: SLF001 (Keras' own way to drop a weight)
        # TensorFlow's AutoTrackable.__delattr__ drops the checkpoint dependency too
        # (Keras' own __delattr__ would also run a full gc.collect() per variable).
        super(keras.layers.Layer, layer).__delattr__(name)
    layer.lora_enabled = False
    return adapters


def _attach(layer: keras.layers.Layer, adapters: tuple) -> None:
    layer._tracker.unlock()  # noqa: SLF001 (as Keras' enable_lora does)
    for name, variable in zip(_ADAPTERS, adapters, strict=True):
        setattr(layer, name, variable)
    layer._tracker.lock()  # noqa: SLF001
    layer.lora_enabled = True


@contextlib.contextmanager
def base_weights_only(model: keras.Model) -> Iterator[None]:
    """Within the block `model` is its base model: no adapters tracked or applied.

    So a checkpoint written without adapters (`train.init_from`: a pretrained
    or imported workdir) restores into an adapted model with every object
    matched, and weights copied layer by layer line up. Adapter values are kept.
    """
    detached = [(layer, _detach(layer)) for layer in lora_layers(model)]
    try:
        yield
    finally:
        for layer, adapters in detached:
            _attach(layer, adapters)


def merge_lora(model: keras.Model) -> int:
    """Folds every adapter into its kernel (W += alpha / rank · A·B) and removes it.

    Afterwards the model is the plain family model (same variables, same
    checkpoint layout as a full fine-tune's model part) computing what the
    adapted one did. Returns the number of merged layers. Run it in the
    context (strategy scope or none) the model's variables were made in.
    """
    layers = lora_layers(model)
    for layer in layers:
        kernel = layer._kernel  # noqa: SLF001 (the base variable Keras' `kernel` adds A·B to)
        a, b = layer.lora_kernel_a, layer.lora_kernel_b
        rank = a.shape[-1]  # either shape: A [..., r], B [r, ...]
        delta = (layer.lora_alpha / layer.lora_rank) * tf.matmul(
            tf.reshape(tf.cast(a, tf.float32), [-1, rank]),
            tf.reshape(tf.cast(b, tf.float32), [rank, -1]),
        )
        merged = tf.cast(kernel, tf.float32) + tf.reshape(delta, kernel.shape)
        kernel.assign(tf.cast(merged, kernel.dtype))
        _detach(layer)
        if isinstance(layer, _PaperLora):  # back to the plain layer class
            object.__setattr__(layer, "__class__", type(layer).__mro__[2])
        kernel.trainable = True
    return len(layers)


def copy_weights(target: keras.Model, source: keras.Model) -> None:
    """Assigns every weight of `source` (a merged LoRA model) to `target`'s same weight.

    Matched by path below the models' own names, which Keras uniquifies
    ("llama_1/block_0/…"); a source weight without a counterpart is a ValueError.
    """
    ours = {v.path.split("/", 1)[-1]: v for v in target.weights}
    for theirs in source.weights:
        path = theirs.path.split("/", 1)[-1]
        if path not in ours:
            raise ValueError(f"{path} has no counterpart in the model being initialised")
        ours[path].assign(theirs)


def trainable_summary(model: keras.Model) -> dict[str, int]:
    """Parameter counts for logs and metrics.json: trainable, adapters, total."""
    # From static shapes: reading a sharded (DTensor) variable's size would copy it.
    count = lambda vs: int(sum(math.prod(v.shape) for v in vs))  # noqa: E731
    return {
        "trainable_params": count(model.trainable_variables),
        "lora_params": count(adapter_variables(model)),
        "total_params": count(model.weights),
    }
