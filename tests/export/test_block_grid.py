"""Block grids (tfllm.export.block_grid): Q4_1 / Q8_0 weights reach LiteRT's integer
kernels without a second rounding. References: the grids built here in numpy, the
float Keras model, and LiteRT's own blockwise int4 on the same weights."""

import keras
import numpy as np
import pytest

from tfllm.export import block_grid
from tfllm.export.block_grid import affine_int4, exported_on_grids, int8_rows, litert_scale
from tfllm.models.gpt import GPT
from tfllm.models.llama import Llama

BLOCK = block_grid.BLOCK


def q4_1(kernel: np.ndarray, scale_rule=lambda d: d.astype(np.float16).astype(np.float32)):
    """GGUF Q4_1 along the input axis (blocks of 32): d·q + min, q in 0..15."""
    inputs, outputs = kernel.shape
    w = kernel.reshape(inputs // BLOCK, BLOCK, outputs)
    low = w.min(1, keepdims=True).astype(np.float16).astype(np.float32)
    d = scale_rule((w.max(1, keepdims=True) - low) / 15)
    q = np.clip(np.rint((w - low) / d), 0, 15)
    return (d * q + low).reshape(inputs, outputs).astype(np.float32)


def q8_0(table: np.ndarray) -> np.ndarray:
    """GGUF Q8_0 along each row (blocks of 32): d·q, d = max|w|/127 in float16."""
    rows, width = table.shape
    w = table.reshape(rows, width // BLOCK, BLOCK)
    d = (np.abs(w).max(2, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    return (np.rint(w / d) * d).reshape(rows, width).astype(np.float32)


def rebuilt(symmetric: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return symmetric + np.repeat(offsets, BLOCK, axis=0)


def test_a_q4_1_kernel_with_litert_scales_comes_back_exactly():
    rng = np.random.default_rng(0)
    kernel = q4_1(rng.normal(0, 0.05, (128, 24)).astype(np.float32), litert_scale)
    symmetric, offsets = affine_int4(kernel)
    assert offsets.shape == (4, 24)
    np.testing.assert_allclose(rebuilt(symmetric, offsets), kernel, atol=1e-7)
    # d·k with k in -8..7, both ends used in every block: what LiteRT's recovery reads d off.
    blocks = symmetric.reshape(4, BLOCK, 24)
    d = (blocks.max(1) - blocks.min(1)) / 15
    k = blocks / d[:, np.newaxis]
    np.testing.assert_allclose(k, np.rint(k), atol=1e-5)
    assert np.all(np.rint(k).min(1) == -8) and np.all(np.rint(k).max(1) == 7)
    np.testing.assert_array_equal(litert_scale(d), d)


def test_gguf_q4_1_scales_cost_only_their_bf16_rounding():
    rng = np.random.default_rng(1)
    kernel = q4_1(rng.normal(0, 0.05, (96, 40)).astype(np.float32))  # float16 scales
    step = (kernel.reshape(3, BLOCK, 40).max(1) - kernel.reshape(3, BLOCK, 40).min(1)) / 15
    error = np.abs(rebuilt(*affine_int4(kernel)) - kernel).reshape(3, BLOCK, 40)
    # ≤ |k - mean k|·|d - bf16(d)| ≤ 15·2⁻⁸·d: a few % of a step, where re-rounding costs d/2.
    assert np.all(error.max(1) <= 15 * 2**-8 * step)


def test_float_kernels_quantize_better_than_symmetric_int4():
    rng = np.random.default_rng(2)
    kernel = (rng.normal(0, 0.05, (256, 64)) + rng.normal(0, 0.02, (1, 64))).astype(np.float32)
    affine_error = rebuilt(*affine_int4(kernel)) - kernel
    w = kernel.reshape(8, BLOCK, 64)
    scale = litert_scale(np.abs(w).max(1, keepdims=True) / 7)  # LiteRT's symmetric int4
    symmetric_error = (np.clip(np.rint(w / scale), -8, 7) * scale).reshape(256, 64) - kernel
    assert np.mean(affine_error**2) < 0.8 * np.mean(symmetric_error**2)


def test_int8_rows_return_a_q8_0_table_exactly():
    rng = np.random.default_rng(3)
    table = q8_0(rng.normal(0, 0.1, (50, 64)).astype(np.float32))
    q, scales = int8_rows(table)
    assert q.dtype == np.int8 and scales.shape == (50, 2)
    np.testing.assert_array_equal(
        q.reshape(50, 2, BLOCK) * scales[..., np.newaxis], table.reshape(50, 2, BLOCK)
    )


def test_shapes_off_the_block_are_refused():
    with pytest.raises(ValueError, match="multiple of the block"):
        affine_int4(np.zeros((40, 8), np.float32))
    with pytest.raises(ValueError, match="multiple of the block"):
        int8_rows(np.zeros((4, 40), np.float32))


def _on_grids(model: keras.Model) -> None:
    """Puts every eligible kernel on a Q4_1 grid (LiteRT-representable scales) and the
    token table on Q8_0, as a GGUF import would."""
    for layer, n in block_grid._grid_layers(model):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        inputs = int(np.prod(kernel.shape[:n]))
        layer.kernel.assign(q4_1(kernel.reshape(inputs, -1), litert_scale).reshape(kernel.shape))
    table = model.token_embedding.embeddings
    table.assign(q8_0(keras.ops.convert_to_numpy(table)))
    # Trained norms scale their outputs, and a converter that folds that scale into
    # the next kernel takes the kernel off its grid: give them non-trivial scales.
    rng = np.random.default_rng(5)
    for weight in model.weights:
        if weight.path.endswith(("norm/scale", "norm/gamma")):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))


MODELS = {
    "llama": lambda: Llama(
        vocab_size=96,
        max_length=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        hidden_dim=64,
        intermediate_dim=96,
    ),  # fmt: skip
    "gpt": lambda: GPT(
        vocab_size=96,
        max_length=32,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
    ),  # fmt: skip
}


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_swapped_model_computes_what_the_float_one_does(family):
    keras.utils.set_random_seed(0)
    model = MODELS[family]()
    ids = np.random.default_rng(0).integers(0, 96, (2, 12)).astype(np.int32)
    model(ids)
    _on_grids(model)
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    classes = [type(layer) for layer in model._flatten_layers()]
    reference = keras.ops.convert_to_numpy(model(ids))
    with exported_on_grids(model, int4=True) as notes:
        swapped = keras.ops.convert_to_numpy(model(ids))
        kernels = [layer.kernel for layer, _ in block_grid._grid_layers(model)]
        assert not np.allclose(keras.ops.convert_to_numpy(kernels[0]), before[kernels[0].path])
    assert notes["int8_token_table"] and notes["affine_int4_kernels"] == len(kernels) > 0
    np.testing.assert_allclose(swapped, reference, atol=2e-5 * np.abs(reference).max())
    # Restored: the Keras model stays the float reference the export is checked against.
    assert [type(layer) for layer in model._flatten_layers()] == classes
    for v in model.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), before[v.path])


def test_int4_litertlm_of_a_gguf_like_model_stays_near_keras():
    """A Llama on Q4_1/Q8_0 grids (as imported from a GGUF): the int4 contract file's
    logits in LiteRT vs the float Keras model, against LiteRT's plain blockwise int4
    of the same float file (the route that re-rounds every weight)."""
    pytest.importorskip("litert_quantizer")
    from litert_quantizer import qtyping, quantizer

    from tfllm.export.litertlm_model import ContractLM, convert_litertlm

    keras.utils.set_random_seed(0)
    model = MODELS["llama"]()
    ids = np.random.default_rng(1).integers(0, 96, 16).astype(np.int32)
    model(ids[np.newaxis])
    _on_grids(model)
    reference = keras.ops.convert_to_numpy(model(ids[np.newaxis]))[0]

    blob, notes = convert_litertlm(model, [8], "int4")
    assert notes["affine_int4_kernels"] == 14 and notes["int8_token_table"]
    error = np.abs(ContractLM(blob).teacher_forced_logits(ids) - reference).max()

    plain = quantizer.Quantizer(bytearray(convert_litertlm(model, [8], "none")[0]))
    plain.add_dynamic_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=4,
        granularity=qtyping.QuantGranularity.BLOCKWISE_32,
    )  # fmt: skip
    plain_blob = bytes(plain.quantize(enable_progress_bar=False).quantized_model)
    plain_error = np.abs(ContractLM(plain_blob).teacher_forced_logits(ids) - reference).max()
    assert error < plain_error / 4, (error, plain_error)
