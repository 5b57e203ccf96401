"""`--method=quantize`: Keras 3 weight-only int8/int4 as a workdir the other commands use."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import last_stderr_line, run_cli


@pytest.fixture(scope="module")
def int8_workdir(trained_workdir, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("kq") / "int8")
    proc = run_cli(
        "compress", f"--workdir={trained_workdir}", f"--output={output}", "--method=quantize"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output


def test_quantized_workdir_reloads_int8_and_matches_the_float_model(trained_workdir, int8_workdir):
    import tensorflow as tf

    from tfllm.inference.loading import load_trained

    with open(os.path.join(int8_workdir, "compression.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["method"] == "quantize" and record["settings"]["quantize_mode"] == "int8"
    assert record["weight_bytes"] < 0.8 * record["source_weight_bytes"]
    before, after = record["source_metrics"]["perplexity"], record["metrics"]["perplexity"]
    assert abs(after / before - 1) < 0.02, (before, after)

    quantized, source = load_trained(int8_workdir), load_trained(trained_workdir)
    kernels = [w for w in quantized.model.weights if w.path.endswith("query/kernel")]
    assert kernels and all(w.dtype == "int8" for w in kernels)
    ids = tf.constant(np.arange(32)[None, :] % 300, tf.int32)
    got, want = quantized.model(ids).numpy(), source.model(ids).numpy()
    # Keras int8 also quantizes activations on the fly: close, not identical.
    assert np.mean(np.abs(got - want)) < 0.03
    assert np.mean(got.argmax(-1) == want.argmax(-1)) > 0.9


def test_quantized_workdir_generates_and_refuses_tflite(int8_workdir):
    proc = run_cli("generate", f"--workdir={int8_workdir}", "--prompt=ROMEO:", "--max_new_tokens=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = run_cli("export", f"--workdir={int8_workdir}", "--format=tflite")
    assert refused.returncode != 0
    line = last_stderr_line(refused)
    assert line.startswith("tfllm-export: error: --format=tflite:") and "Keras-quantized" in line
    assert not os.path.exists(os.path.join(int8_workdir, "export", "tflite_none"))


def test_quantized_workdir_cannot_be_trained(int8_workdir):
    proc = run_cli("train", f"--workdir={int8_workdir}")
    assert proc.returncode != 0
    assert "config.compress.method" in last_stderr_line(proc)
