"""The weight matrices compression acts on, found in any tfllm model.

Every `Dense`, `EinsumDense` (attention's query/key/value/output projections
inside keras-hub's `TransformerDecoder`), `Conv1D` and `Embedding` kernel is a
matrix in disguise: its leading axes are contracted with the input, its
trailing axes are output channels. `Kernel.to_out_in` flattens it to the
[out, in] matrix TFLite stores (what 2:4 sparsity groups along and what
per-channel int8 scales index), and `from_out_in` maps a mask back.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import keras
import tensorflow as tf

PRUNABLE_KINDS = ("dense", "einsum_dense", "conv1d", "embedding")


@dataclass(frozen=True)
class Kernel:
    layer: keras.layers.Layer
    variable: keras.Variable
    kind: str  # one of PRUNABLE_KINDS
    in_axes: int  # leading axes contracted with the input (embedding: see to_out_in)
    # The variable's path below the model, e.g. `block_0/self_attention/query/kernel`:
    # the model's own name is dropped, since Keras numbers every further model a
    # process builds (`gpt_1/…`), which would make records differ by history.
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """[out, in] of the flattened matrix."""
        if self.kind == "embedding":
            return self.shape[0], self.shape[1]
        return prod(self.shape[self.in_axes :]), prod(self.shape[: self.in_axes])

    def to_out_in(self, value: tf.Tensor) -> tf.Tensor:
        """The kernel as an [out, in] matrix.

        An embedding table [vocab, d] is already [out, in] for the tied LM head
        (logits = x · Eᵀ contracts over d).
        """
        if self.kind == "embedding":
            return value
        out, inp = self.matrix_shape
        return tf.transpose(tf.reshape(value, [inp, out]))

    def from_out_in(self, matrix: tf.Tensor) -> tf.Tensor:
        if self.kind == "embedding":
            return matrix
        return tf.reshape(tf.transpose(matrix), self.shape)


def _einsum_in_axes(layer: keras.layers.EinsumDense) -> int | None:
    """Leading kernel axes the equation contracts; None if they are not leading."""
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1]
    contracted = [c not in output for c in kernel]
    count = sum(contracted)
    if contracted != [True] * count + [False] * (len(kernel) - count):
        return None
    return count


def _classify(layer: keras.layers.Layer) -> tuple[str, keras.Variable, int] | None:
    if isinstance(layer, keras.layers.EinsumDense):
        axes = _einsum_in_axes(layer)
        return None if axes is None else ("einsum_dense", layer.kernel, axes)
    if isinstance(layer, keras.layers.Dense):
        return "dense", layer.kernel, 1
    if isinstance(layer, keras.layers.Conv1D):
        return "conv1d", layer.kernel, 2
    if isinstance(layer, keras.layers.Embedding):
        return "embedding", layer.embeddings, 1
    return None


def find_kernels(model: keras.Model, kinds: tuple[str, ...] = PRUNABLE_KINDS) -> list[Kernel]:
    """Every kernel of the given kinds in `model`, in a stable (path) order.

    Walks the layer tree with Keras' `_flatten_layers` (the same walk
    `model.layers` can't do: keras-hub blocks nest their Dense/EinsumDense
    layers several levels deep).
    """
    if not model.built:
        raise ValueError("find_kernels: build the model first (call it once)")
    found: dict[str, Kernel] = {}
    prefix = model.name + "/"
    for layer in model._flatten_layers(include_self=False, recursive=True):
        classified = _classify(layer)
        if classified is None:
            continue
        kind, variable, in_axes = classified
        if not isinstance(variable, keras.Variable):
            continue  # e.g. an int4-quantized Dense unpacks its kernel into a tensor
        if kind in kinds and variable.path not in found:
            name = variable.path.removeprefix(prefix)
            found[variable.path] = Kernel(layer, variable, kind, in_axes, name)
    return [found[k] for k in sorted(found)]
