"""LM → TFLite with prefill/decode KV-cache signatures, checked against the Keras model."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import last_stderr_line, run_cli

from tfllm.data.sources import lm_token_streams, load_text_splits
from tfllm.export.lm_tflite import export_lm_tflite, representative_dataset
from tfllm.export.verified import VerificationError
from tfllm.inference.generate import Generator
from tfllm.inference.lm_tflite_runner import LiteRTGenerator, LiteRTLM
from tfllm.inference.loading import load_trained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(trained_workdir):
    return load_trained(trained_workdir)


@pytest.fixture(scope="module")
def streams(trained):
    splits = load_text_splits(trained.config.data)
    return lm_token_streams(trained.config, trained.tokenizer, splits)


@pytest.fixture(scope="module")
def float_export(trained, streams, tmp_path_factory):
    """A float export with two prefill buckets (8 and the whole context, 32)."""
    trained.config.export.prefill_buckets = (8,)
    target = str(tmp_path_factory.mktemp("lm_tflite") / "tflite_none")
    train_ids, eval_ids = streams
    record = export_lm_tflite(
        trained, target, "none", eval_ids=eval_ids, train_ids=train_ids, verify_windows=3
    )
    return target, record


def test_signatures_and_cache_layout(float_export, trained):
    target, record = float_export
    model = trained.model
    sigs = record["signatures"]
    assert sorted(sigs) == ["decode", "prefill", "prefill_8"]
    layer_cache = [2, 1, model.num_heads, model.max_length, model.head_dim]
    cache_names = [f"kv_cache_{i}" for i in range(model.num_layers)]
    assert sigs["prefill_8"]["inputs"] == {
        "length": {"shape": [1], "dtype": "int32"},
        "tokens": {"shape": [1, 8], "dtype": "int32"},
    }
    assert sigs["prefill"]["inputs"]["tokens"]["shape"] == [1, model.max_length]
    assert sorted(sigs["decode"]["inputs"]) == sorted(["token", "position", *cache_names])
    assert sigs["decode"]["inputs"]["token"] == {"shape": [1, 1], "dtype": "int32"}
    for name in ("prefill", "decode"):
        outputs = sigs[name]["outputs"]
        assert outputs["logits"] == {"shape": [1, trained.tokenizer.vocab_size], "dtype": "float32"}
        for cache in cache_names:
            assert outputs[cache] == {"shape": layer_cache, "dtype": "float32"}
    assert os.path.isfile(os.path.join(target, "tokenizer.model"))


def test_float_export_matches_keras(float_export):
    _, record = float_export
    assert record["max_abs_diff"] < 1e-4
    assert record["prefill_max_abs_diff"] < 1e-4
    assert abs(record["perplexity"] / record["keras_perplexity"] - 1) < 1e-5
    assert record["greedy"]["identical"] and record["greedy"]["keras"] == record["greedy"]["litert"]
    assert record["tokens"] == 3 * 32
    decode = record["latency"]["decode"]
    assert decode["runs"] == 100 and decode["median_ms"] > 0
    assert "FULLY_CONNECTED" in record["ops"] and record["size_bytes"] > 0
    on_disk = json.loads(Path(float_export[0], "verification.json").read_text())
    assert on_disk["max_abs_diff"] == record["max_abs_diff"]
    assert on_disk["versions"]["ai_edge_litert"]


def test_kv_cache_decode_equals_full_forward(float_export, trained, streams):
    """Independent of the export's own check: each bucket, then decode steps."""
    lm = LiteRTLM(os.path.join(float_export[0], "model.tflite"))
    ids = streams[1][:20]
    reference = trained.model(tf.constant(ids[np.newaxis]), training=False)[0].numpy()
    for prompt_len in (1, 5, 8, 9, 12):  # bucket 8 up to 8, then the 32-wide prefill
        logits, caches = lm.prefill(ids[:prompt_len])
        np.testing.assert_allclose(logits, reference[prompt_len - 1], atol=1e-4)
        for pos in range(prompt_len, 20):
            logits, caches = lm.decode(int(ids[pos]), pos, caches)
            np.testing.assert_allclose(logits, reference[pos], atol=1e-4)


@pytest.mark.parametrize(
    "sampling",
    [dict(sampler="greedy"), dict(sampler="top_k", top_k=5, temperature=0.9, seed=4),
     dict(sampler="top_p", top_p=0.8, seed=2)],
)
def test_litert_generator_follows_keras(float_export, trained, sampling):
    lm = LiteRTLM(os.path.join(float_export[0], "model.tflite"))
    prompt = trained.tokenizer.encode("ROMEO: what")
    eos = trained.tokenizer.eos_id
    keras_ids = Generator(trained.model).generate(prompt, 20, eos_id=eos, **sampling)
    litert_ids = LiteRTGenerator(lm).generate(prompt, 20, eos_id=eos, **sampling)
    np.testing.assert_array_equal(keras_ids, litert_ids)


def test_calibration_decode_positions_exist(trained, streams):
    """int8 calibration feeds decode steps; each must have a cache slot left
    (position < context). A full-context prefill bucket once produced position
    == context, which TFLite's position gather rejects during conversion."""
    max_length = int(trained.model.max_length)
    generate = representative_dataset(trained.model, streams[0], [max_length])
    positions = [int(inputs["position"][0]) for name, inputs in generate() if name == "decode"]
    assert positions and max(positions) < max_length


def test_quantized_exports_stay_within_budget(trained, streams, tmp_path):
    train_ids, eval_ids = streams
    for mode in ("dynamic", "float16"):
        record = export_lm_tflite(
            trained, str(tmp_path / mode), mode, eval_ids=eval_ids, train_ids=train_ids,
            verify_windows=2,
        )
        assert record["quantize"] == mode
        assert record["perplexity_increase"] <= record["tolerance"]["perplexity_increase"]
    # int8 on this 40-step model: the budget is lifted so the file is written and measured.
    record = export_lm_tflite(
        trained, str(tmp_path / "int8"), "int8", eval_ids=eval_ids, train_ids=train_ids,
        verify_windows=2, max_perplexity_increase=100.0,
    )
    assert "int8_only" in record and np.isfinite(record["perplexity"])


def test_parity_break_leaves_nothing(trained, streams, tmp_path):
    target = tmp_path / "tflite_none"
    with pytest.raises(VerificationError, match="nothing written"):
        export_lm_tflite(
            trained, str(target), "none", eval_ids=streams[1], train_ids=streams[0],
            verify_windows=1, max_abs_diff=1e-12,
        )
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # no temp dir left either


def test_cli_export_and_litert_generate(trained_workdir):
    proc = run_cli("export", f"--workdir={trained_workdir}", "--format=tflite",
                   "--verify_examples=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "greedy_identical  True" in proc.stdout
    path = Path(trained_workdir) / "export" / "tflite_none" / "model.tflite"
    assert path.is_file()
    args = [f"--workdir={trained_workdir}", "--prompt=KING:", "--max_new_tokens=12"]
    for extra in ([], ["--sampler=temperature", "--temperature=0.8", "--seed=5"]):
        keras_out = run_cli("generate", *args, *extra, "--backend=keras")
        litert_out = run_cli("generate", *args, *extra, "--backend=litert")
        assert litert_out.returncode == 0, litert_out.stderr[-2000:]
        assert keras_out.stdout == litert_out.stdout
        assert "XNNPACK" not in litert_out.stderr  # LiteRT's INFO line stays out (issue 24)

    # tfllm-evaluate through the .tflite: the same windows, the same perplexity.
    window_args = [f"--workdir={trained_workdir}", "--max_batches=1", "--batch_size=2"]
    keras_eval = run_cli("evaluate", *window_args)
    litert_eval = run_cli("evaluate", *window_args, "--backend=litert")
    assert litert_eval.returncode == 0, litert_eval.stderr[-2000:]
    metrics = json.loads((Path(trained_workdir) / "metrics.json").read_text())
    assert metrics["litert_none_eval_tokens"] == metrics["eval_tokens"] == 2 * 32
    assert abs(metrics["litert_none_eval_perplexity"] / metrics["perplexity"] - 1) < 1e-4
    assert keras_eval.returncode == 0

    # The edge benchmark times every backend the workdir was exported to (smoke mode).
    out = Path(trained_workdir) / "edge.json"
    proc = run_cli("benchmark", "--mode=edge", f"--workdir={trained_workdir}",
                   "--decode_new_tokens=4", "--repeats=1", "--warmup=1", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    edge = json.loads(out.read_text())["edge"]
    assert {"keras", "litert_none"} <= set(edge["backends"])
    assert all(side["tokens_per_second"] > 0 for side in edge["backends"].values())
    assert edge["tflite_exports"]["none"]["perplexity_increase"] < 1e-3

    # A forced parity break fails with one line and keeps the previous export.
    before = path.read_bytes()
    proc = run_cli("export", f"--workdir={trained_workdir}", "--format=tflite",
                   "--verify_examples=1", "--max_abs_diff=1e-12")
    assert proc.returncode != 0
    assert "nothing written" in last_stderr_line(proc)
    assert path.read_bytes() == before


def test_cli_errors(trained_workdir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("export", f"--workdir={empty}", "--format=tflite")
    assert proc.returncode != 0
    assert last_stderr_line(proc).startswith("tfllm-export: error: ")
    assert str(empty) in last_stderr_line(proc)
    proc = run_cli("generate", f"--workdir={trained_workdir}", "--backend=litert",
                   "--quantize=float16")
    assert proc.returncode != 0
    assert "tflite_float16/model.tflite not found" in last_stderr_line(proc)
    proc = run_cli("export", f"--workdir={trained_workdir}", "--quantize=int8")
    assert proc.returncode != 0 and "--quantize" in last_stderr_line(proc)


def test_saved_model_score_signature(trained, tmp_path):
    """`score` = the Keras log-likelihood of each text after an eos."""
    from tfllm.export.lm_saved_model import export_saved_model
    from tfllm.export.verified import load_serving

    target = str(tmp_path / "sm")
    export_saved_model(trained.model, trained.tokenizer, target, max_new_tokens=4,
                       verify_prompts=["A"], reference=_greedy(trained, ["A"], 4))
    texts = ["ROMEO: hello there", "", "x " * 40]
    out = load_serving(target).signatures["score"](texts=tf.constant(texts))
    tok = trained.tokenizer
    scores = zip(texts, out["log_likelihood"].numpy(), out["tokens"].numpy(), strict=True)
    for text, ll, n in scores:
        ids = tok.encode(text)[: trained.model.max_length]
        assert n == len(ids)
        if not ids:
            assert ll == 0.0
            continue
        inputs = np.array([[tok.eos_id, *ids[:-1]]], np.int32)
        logits = trained.model(inputs, training=False)[0].numpy().astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                               keepdims=True)) - logits.max(-1, keepdims=True)
        expected = logp[np.arange(len(ids)), ids].sum()
        assert abs(ll - expected) < 1e-3 * max(1.0, abs(expected))


def _greedy(trained, prompts, n):
    from tfllm.inference.generate import generate_text

    return generate_text(Generator(trained.model), trained.tokenizer, prompts, n)
