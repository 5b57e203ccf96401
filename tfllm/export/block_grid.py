"""Weights on 4- and 8-bit block grids, carried into LiteRT's integer kernels without re-rounding.

Why this exists: LiteRT's blockwise int4 is *symmetric* (a bf16 scale per
block of 32 along the input dimension, levels -8…7, no zero point), while a
GGUF checkpoint's Q4_1 weights are *affine* (a scale and a minimum per block
of 32: 16 levels between min and max). Re-rounding Q4_1 weights onto a
symmetric grid adds a second rounding as large as the first: SmolLM2-135M's
int4 bundle lost 106 % perplexity that way (docs/edge.md). An affine block is
a symmetric one plus a constant,

    w = d·k + m,   k = q - 8 ∈ [-8, 7],

so `x · W = x · (d·K) + blocksum(x) · M`, where `blocksum` adds each block of
32 inputs and `M` `[inputs/32, outputs]` holds the per-block constants. The
first product is exactly LiteRT's int4 kernel (the scale `d` is the one the
quantizer recovers from `d·K`: LiteRT's dequantized-weight recovery); the
second is a float matmul 1/32 the size. `affine_int4` computes that split for
any kernel — for weights already on a Q4_1 grid it returns that grid (scales
rounded to bf16, what LiteRT stores), for float weights it is Q4_1-style
quantization, whose asymmetric levels fit a block better than symmetric ones.

The token table is a GATHER, which LiteRT's quantizer leaves float (the
largest tensor of a small model: 113 MB of SmolLM2's float file). `int8_rows`
stores it as int8 with a float scale per block of 32 along each row, and the
export looks rows up from that; a table that was GGUF Q8_0 (symmetric int8,
blocks of 32) comes back exactly.

`exported_on_grids(model, int4=...)` swaps both in on a model for the length
of a conversion and restores it after (the Keras model stays the float
reference the export is verified against).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import keras
import ml_dtypes
import numpy as np
import tensorflow as tf

BLOCK = 32  # LiteRT's blockwise int4 and GGUF's Q4_1/Q8_0 block
GRID_SCOPE = "affine_int4"  # name scope of the d·K matmuls (int4 by LiteRT's weight recovery)
OFFSET_SCOPE = "block_offset"  # name scope of the offset matmuls (kept float by the quantizer)


def litert_scale(scale: np.ndarray) -> np.ndarray:
    """`scale` as LiteRT stores a blockwise scale: bf16's mantissa in a float16."""
    return scale.astype(ml_dtypes.bfloat16).astype(np.float16).astype(np.float32)


def affine_int4(kernel: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """`kernel` `[inputs, outputs]` as (`d·K` on LiteRT's int4 grid, per-block offsets).

    The offsets are `[inputs/block, outputs]`.

    Per block of `block` inputs and per output: 16 levels from the block's
    minimum to its maximum (Q4_1's rule, so a Q4_1 block gets its own levels
    back), `d` rounded to what LiteRT stores, then the offset that fits the
    block best given those levels (least squares: the block's mean residual).
    Every block uses both k = -8 and k = 7, which is what lets LiteRT's
    recovery read `d` back off the symmetric part.
    """
    inputs, outputs = kernel.shape
    if inputs % block:
        raise ValueError(f"{inputs} inputs are not a multiple of the block ({block})")
    w = kernel.astype(np.float64).reshape(inputs // block, block, outputs)
    low, high = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    step = (high - low) / 15.0
    levels = np.rint(np.divide(w - low, step, out=np.zeros_like(w), where=step > 0))
    k = np.clip(levels, 0, 15) - 8.0
    scale = litert_scale(step).astype(np.float64)
    symmetric = scale * k
    offsets = (w - symmetric).mean(axis=1)
    return symmetric.reshape(inputs, outputs).astype(np.float32), offsets.astype(np.float32)


def int8_rows(table: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """`table` `[rows, width]` as int8 `[rows, width]` and float32 scales `[rows, width/block]`.

    Symmetric, scale = max |w| / 127 per block (Q8_0's rule: a Q8_0 table
    comes back exactly).
    """
    rows, width = table.shape
    if width % block:
        raise ValueError(f"width {width} is not a multiple of the block ({block})")
    w = table.astype(np.float32).reshape(rows, width // block, block)
    scale = np.abs(w).max(axis=2, keepdims=True) / np.float32(127)
    q = np.rint(np.divide(w, scale, out=np.zeros_like(w), where=scale > 0))
    return q.astype(np.int8).reshape(rows, width), scale[..., 0].astype(np.float32)


def _input_axes(layer: keras.layers.Layer) -> int | None:
    """How many leading kernel axes a Dense/EinsumDense contracts with its input's
    last axes, or None when its kernel is not laid out [inputs..., outputs...]."""
    if isinstance(layer, keras.layers.Dense):
        return 1
    if not isinstance(layer, keras.layers.EinsumDense):
        return None
    match = re.fullmatch(r"(\w+),(\w+)->(\w+)", layer.equation.replace(" ", ""))
    if match is None:
        return None
    x, kernel, out = match.groups()
    contracted = [c for c in kernel if c in x and c not in out]
    n = len(contracted)
    kept = x[: len(x) - n]
    if kernel[:n] != x[len(x) - n :] or out != kept + kernel[n:]:
        return None
    return n


class _BlockOffset:
    """Mixin over Dense/EinsumDense: adds blocksum(x) · offsets (see the module doc)
    before the layer's activation, which the swap moves to `_grid_activation`."""

    def call(self, inputs, *args, **kwargs):
        with tf.name_scope(GRID_SCOPE):
            y = super().call(inputs, *args, **kwargs)
        with tf.name_scope(OFFSET_SCOPE):
            n = self._offset_input_axes
            leading = tf.shape(inputs)[: tf.rank(inputs) - n]
            blocks = tf.reshape(inputs, tf.concat([leading, [-1, BLOCK]], axis=0))
            sums = tf.reduce_sum(blocks, axis=-1)
            offsets = tf.cast(self._block_offsets, sums.dtype)
            y = y + tf.cast(tf.tensordot(sums, offsets, axes=1), y.dtype)
        return self._grid_activation(y)


class _Int8Lookup:
    """Mixin over ReversibleEmbedding: the forward lookup reads the int8 table and
    its block scales; `reverse=True` (the tied LM head) keeps the float matrix,
    which the quantizer turns into an integer FULLY_CONNECTED weight."""

    def call(self, inputs, reverse=False):
        if reverse:
            return super().call(inputs, reverse=True)
        ids = tf.cast(inputs, tf.int32)
        rows = tf.cast(tf.gather(self._int8_table, ids), tf.float32)
        scales = tf.gather(self._int8_scales, ids)
        width = self._int8_table.shape[-1]
        shape = tf.concat([tf.shape(ids), [width // BLOCK, BLOCK]], axis=0)
        values = tf.reshape(rows, shape) * scales[..., tf.newaxis]
        values = tf.reshape(values, tf.concat([tf.shape(ids), [width]], axis=0))
        return tf.cast(values, self.compute_dtype)


_SWAPPED: dict[tuple[type, type], type] = {}
_SWAP_ATTRIBUTES = (
    "_int8_table", "_int8_scales", "_offset_input_axes", "_block_offsets", "_grid_activation",
)  # fmt: skip


def _swap(layer: keras.layers.Layer, mixin: type) -> type:
    original = type(layer)
    key = (mixin, original)
    if key not in _SWAPPED:
        _SWAPPED[key] = type(
            f"{mixin.__name__.lstrip('_')}{original.__name__}", (mixin, original), {}
        )
    layer.__class__ = _SWAPPED[key]
    return original


def _grid_layers(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, int]]:
    for layer in model._flatten_layers(include_self=False):  # noqa: SLF001 (Keras' own walk)
        n = _input_axes(layer)
        if n is None or getattr(layer, "lora_enabled", False) or layer.quantization_mode:
            continue  # adapters merge before export; Keras-quantized kernels are not float
        shape = tuple(layer.kernel.shape)
        if int(np.prod(shape[:n])) % BLOCK == 0:
            yield layer, n


@contextlib.contextmanager
def exported_on_grids(model: keras.Model, *, int4: bool) -> Iterator[dict[str, Any]]:
    """`model` with its token table int8 (and, with `int4`, every kernel split by
    `affine_int4`) while the block runs; yields notes on what was swapped.

    Kernels with an input size that is not a multiple of 32 stay as they are
    (the quantizer treats them as any other weight).
    """
    restore: list[tuple[keras.layers.Layer, type, np.ndarray | None]] = []
    activations: list[tuple[keras.layers.Layer, Any]] = []
    notes: dict[str, Any] = {"int8_token_table": False, "affine_int4_kernels": 0}
    try:
        embedding = getattr(model, "token_embedding", None)
        if isinstance(embedding, keras.layers.Embedding):
            width = int(embedding.embeddings.shape[-1])
            if width % BLOCK == 0:
                table, scales = int8_rows(keras.ops.convert_to_numpy(embedding.embeddings))
                embedding._int8_table = tf.constant(table)  # noqa: SLF001
                embedding._int8_scales = tf.constant(scales)  # noqa: SLF001
                restore.append((embedding, _swap(embedding, _Int8Lookup), None))
                notes["int8_token_table"] = True
        if int4:
            for layer, n in list(_grid_layers(model)):
                kernel = keras.ops.convert_to_numpy(layer.kernel)
                shape = kernel.shape
                inputs = int(np.prod(shape[:n]))
                symmetric, offsets = affine_int4(kernel.reshape(inputs, -1))
                restore.append((layer, _swap(layer, _BlockOffset), kernel))
                activations.append((layer, layer.activation))
                layer._offset_input_axes = n  # noqa: SLF001
                layer._block_offsets = tf.constant(  # noqa: SLF001
                    offsets.reshape((inputs // BLOCK, *shape[n:]))
                )
                layer._grid_activation = layer.activation  # noqa: SLF001
                layer.activation = keras.activations.linear
                layer.kernel.assign(symmetric.reshape(shape))
                notes["affine_int4_kernels"] += 1
        yield notes
    finally:
        for layer, activation in activations:
            layer.activation = activation
        for layer, original, kernel in reversed(restore):
            layer.__class__ = original
            if kernel is not None:
                layer.kernel.assign(kernel)
            for name in _SWAP_ATTRIBUTES:
                if hasattr(layer, name):
                    delattr(layer, name)
