"""Quantization-aware training: the fake-quant arithmetic by hand, and a QAT run to int8 LiteRT.

The unit tests rebuild what a fake-quantized Dense / EinsumDense computes from
numpy: the input fake-quantized per tensor with the range its first training
batch recorded, the kernel rounded per output channel onto the symmetric
narrow-range int8 grid (scale = max|w_c| / 127), matmul/einsum plus bias, and
the output fake-quantized with its recorded range. The end-to-end test
QAT-fine-tunes a small transformer classifier (attention projections
included) with the real `tfllm-compress`, then exports it with
`tfllm-export --quantize=int8` and runs the file in LiteRT.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_config, run_cli

from tfllm.compress.quantization import QATPlugin, attach_fake_quant
from tfllm.errors import ConfigError


def _fake_quant(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-tensor asymmetric 8-bit activation fake quant (TF's reference op)."""
    return tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(x), low, high, num_bits=8, narrow_range=False
    ).numpy()


def _int8_per_channel(matrix: np.ndarray) -> np.ndarray:
    """[in, out] weights on the symmetric narrow-range int8 grid of each output channel."""
    scale = np.abs(matrix).max(axis=0) / 127.0
    return np.round(matrix / scale) * scale


def _activation_range(x: np.ndarray) -> tuple[float, float]:
    return min(float(x.min()), 0.0), max(float(x.max()), 0.0)


def test_fake_quant_dense_and_einsum_match_a_hand_computation():
    rng = np.random.default_rng(0)
    inputs = keras.Input((5, 8))
    dense = keras.layers.Dense(4, name="dense")
    # Attention's query projection: [batch, seq, d] x [d, heads, head_dim].
    query = keras.layers.EinsumDense(
        "abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", name="query"
    )
    model = keras.Model(inputs, [dense(inputs), query(inputs)])
    for layer in (dense, query):
        layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype(np.float32))
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))

    kernels, ranges = attach_fake_quant(model)
    assert sorted(k.name for k in kernels) == ["dense/kernel", "query/kernel"]
    assert ranges and all(isinstance(v, tf.Variable) for v in ranges)

    # The range seed is all positive: its recorded range must still reach down to 0.
    seed = np.abs(rng.normal(size=(3, 5, 8))).astype(np.float32) + 0.5
    model(seed, training=True)
    # Wider than the seed's range: the eval call must clip to the recorded range.
    x = (2.0 * rng.normal(size=(3, 5, 8))).astype(np.float32)
    got_dense, got_query = (t.numpy() for t in model(x, training=False))

    def reference(layer, contract):
        kernel = layer.kernel.numpy()
        matrix = kernel.reshape(8, -1)  # [in, out channels]
        quantized = _int8_per_channel(matrix).reshape(kernel.shape)
        bias = layer.bias.numpy()
        low, high = _activation_range(seed)
        # The output range is the one the training call saw on the seed batch.
        seen = contract(_fake_quant(seed, low, high), quantized) + bias
        out_low, out_high = _activation_range(seen)
        y = contract(_fake_quant(x, low, high), quantized) + bias
        return _fake_quant(y, out_low, out_high), quantized

    want_dense, dense_q = reference(dense, lambda a, w: a @ w)
    want_query, query_q = reference(query, lambda a, w: np.einsum("abc,cde->abde", a, w))
    assert got_dense.shape == (3, 5, 4) and got_query.shape == (3, 5, 2, 3)
    np.testing.assert_allclose(got_dense, want_dense, atol=1e-5)
    np.testing.assert_allclose(got_query, want_query, atol=1e-5)
    # The hand computation really quantized: at most 255 kernel values per channel,
    # and the float model's output differs from the fake-quantized one.
    assert len(np.unique(dense_q[:, 0])) <= 255
    float_dense = x @ dense.kernel.numpy() + dense.bias.numpy()
    assert np.abs(float_dense - got_dense).max() > 1e-4
    # Only this instance was changed: a new Dense computes in float.
    other = keras.layers.Dense(4)
    other.build((None, 8))
    other.kernel.assign(dense.kernel)
    other.bias.assign(dense.bias)
    np.testing.assert_allclose(other(x).numpy(), float_dense, atol=1e-5)


def test_attach_fake_quant_rejects_mixed_precision():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        with pytest.raises(ConfigError, match="--method=qat.*float32"):
            attach_fake_quant(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_qat_plugin_covers_attention_but_not_the_embedding():
    from tfllm.models.gpt import GPT

    model = GPT(
        vocab_size=64, max_length=16, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32
    )
    ids = tf.constant(np.random.default_rng(0).integers(0, 64, size=(2, 16)), tf.int32)
    before = model(ids).numpy()
    plugin = QATPlugin()
    plugin.setup(model, None)
    names = sorted(k.name.split("/", 1)[1] for k in plugin.kernels)
    assert names == [
        "feedforward_intermediate_dense/kernel",
        "feedforward_output_dense/kernel",
        "self_attention/attention_output/kernel",
        "self_attention/key/kernel",
        "self_attention/query/kernel",
        "self_attention/value/kernel",
    ]
    # Per layer: input and output min/max/seen, and the kernel's per-channel min/max.
    assert len(plugin.trackable().ranges) == 6 * (3 + 3 + 2)
    assert "6 Dense/EinsumDense layers" in plugin.initialize(model)
    model(ids, training=True)
    after = model(ids).numpy()
    assert np.abs(after - before).max() > 0  # fake quant is in the forward pass now
    np.testing.assert_allclose(after, before, atol=0.5)  # ...and only nudges it


# --------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def qat_export(labelled_files, tmp_path_factory) -> dict:
    """A transformer classifier trained in-process, QAT'd and int8-exported by the CLIs."""
    import keras

    from tfllm.training.run import train

    root = tmp_path_factory.mktemp("qat")
    source, output = str(root / "teacher"), str(root / "qat")
    keras.utils.set_random_seed(0)  # as the CLI does: the result must not depend on test order
    train(classifier_config(labelled_files, "transformer_classifier", steps=150), source)
    proc = run_cli(
        "compress", f"--workdir={source}", f"--output={output}", "--method=qat", "--steps=20"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = run_cli("export", f"--workdir={output}", "--format=tflite", "--quantize=int8")
    assert exported.returncode == 0, exported.stderr[-3000:]
    return {"source": source, "output": output, "compress": proc}


def test_qat_run_records_and_checkpoints_its_ranges(qat_export):
    output = qat_export["output"]
    with open(os.path.join(output, "compression.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["method"] == "qat" and record["steps"] == 20
    assert record["source"] == os.path.abspath(qat_export["source"])
    # 2 blocks x (query, key, value, attention output, 2 feed-forward) + the head.
    layers = 2 * 6 + 1
    assert (
        f"Quantization-aware training: {layers} Dense/EinsumDense" in qat_export["compress"].stdout
    )
    reader = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(output, "checkpoints"))
    )
    ranges = [k for k in reader.get_variable_to_shape_map() if k.startswith("qat/ranges/")]
    assert len(ranges) == layers * (3 + 3 + 2)
    assert record["source_metrics"]["accuracy"] > 0.9
    # simulated int8 (fake quant) stays close to the float source
    assert record["metrics"]["accuracy"] >= record["source_metrics"]["accuracy"] - 0.05


def test_qat_model_exports_to_int8_and_runs_in_litert(qat_export):
    from ai_edge_litert.interpreter import Interpreter

    from tfllm.data.classification_data import load_labelled_splits
    from tfllm.export.classifier_tflite import encode_padded, keras_probabilities
    from tfllm.inference.loading import load_trained

    target = os.path.join(qat_export["output"], "export", "tflite_int8")
    with open(os.path.join(target, "verification.json"), encoding="utf-8") as f:
        verification = json.load(f)
    assert verification["match"] is True
    assert verification["quantize"] == "int8" and verification["model"] == "transformer_classifier"

    trained = load_trained(qat_export["output"])
    test = load_labelled_splits(trained.config.data).test
    texts, labels = list(test.texts[:40]), list(test.labels[:40])
    ids = encode_padded(trained.tokenizer, texts, 64)
    runner = Interpreter(model_path=os.path.join(target, "model.tflite")).get_signature_runner(
        "classify"
    )
    probabilities = runner(token_ids=ids)["probabilities"]
    assert probabilities.shape == (40, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3)
    keras_p = keras_probabilities(trained.model, ids)
    agreement = (probabilities.argmax(-1) == keras_p.argmax(-1)).mean()
    assert agreement >= 0.9, agreement
    names = [trained.labels.names[i] for i in probabilities.argmax(-1)]
    assert np.mean([a == b for a, b in zip(names, labels, strict=True)]) >= 0.8
