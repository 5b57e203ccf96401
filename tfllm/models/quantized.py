"""Keras' in-place quantization (`model.quantize("int8" | "int4")`).

Keras 3 quantizes the kernels (int8 per output channel, or packed int4) and, in
both modes, the activations too (dynamic per-row int8 at each call): W8A8 /
W4A8, not weight-only.

A quantized workdir's checkpoint holds int8 kernels plus scales, so loading
one must give a freshly built model those variables *before* restoring; that
is why this lives beside the models (loading needs it) and not only in
`tfllm.compress.keras_quantize` (which writes such workdirs).
"""

from __future__ import annotations

import gc
import warnings
from unittest import mock

import keras
import numpy as np


def quantize_in_place(model: keras.Model, mode: str) -> None:
    """`model.quantize(mode)`, without Keras' warning for every LayerNorm/Softmax it skips.

    Keras' `Layer.__delattr__` runs a full `gc.collect()` for every float
    kernel it drops, which for a 30-layer imported model with TensorFlow's
    heap loaded costs seconds per kernel; collecting once at the end frees
    the same buffers.
    """
    with warnings.catch_warnings(), mock.patch.object(gc, "collect", lambda *_: 0):
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method.*")
        model.quantize(mode)
    gc.collect()


def weight_bytes(model: keras.Model) -> int:
    """Bytes of the model's weights as stored (int8 kernels count 1 byte per value)."""
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))
