"""Keras' in-place weight-only quantization (`model.quantize("int8" | "int4")`).

A quantized workdir's checkpoint holds int8 kernels plus scales, so loading
one must give a freshly built model those variables *before* restoring; that
is why this lives beside the models (loading needs it) and not only in
`tfllm.compress.keras_quantize` (which writes such workdirs).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np


def quantize_in_place(model: keras.Model, mode: str) -> None:
    """`model.quantize(mode)`, without Keras' warning for every LayerNorm/Softmax it skips."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method.*")
        model.quantize(mode)


def weight_bytes(model: keras.Model) -> int:
    """Bytes of the model's weights as stored (int8 kernels count 1 byte per value)."""
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))
