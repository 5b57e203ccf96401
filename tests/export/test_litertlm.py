""".litertlm export: the bundle runs in Google's LiteRT-LM engine and its greedy
text equals the Keras model's (the engine is the independent reference runtime)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, last_stderr_line, run_cli

from tfllm.data.sources import lm_token_streams, load_text_splits
from tfllm.export import litertlm as litertlm_export
from tfllm.export.litertlm import engine_chat_template, export_litertlm
from tfllm.export.litertlm_model import ContractLM, convert_litertlm, share_identical_buffers
from tfllm.export.verified import VerificationError
from tfllm.inference.litertlm_runner import LiteRTLMEngine
from tfllm.inference.loading import load_trained

pytest.importorskip("litert_lm")  # the `litertlm` extra (in `dev`, so CI has it)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(trained_workdir):
    return load_trained(trained_workdir)


@pytest.fixture(scope="module")
def eval_ids(trained):
    return lm_token_streams(
        trained.config, trained.tokenizer, load_text_splits(trained.config.data)
    )[1]


@pytest.fixture(scope="module")
def float_export(trained, eval_ids, tmp_path_factory):
    target = tmp_path_factory.mktemp("litertlm") / "litertlm_none"
    return target, export_litertlm(trained, str(target), "none", eval_ids=eval_ids)


def test_float_bundle_follows_the_contract_and_equals_keras(float_export, trained):
    target, record = float_export
    model = trained.model
    assert sorted(os.listdir(target)) == ["model.litertlm", "verification.json"]  # no engine cache
    assert record["prefill_buckets"] == [8]  # the small bucket; the tiny context is 32
    cache = [1, model.num_heads, model.max_length, model.head_dim]
    kv = {f"kv_cache_{kind}_{i}" for i in range(model.num_layers) for kind in "kv"}
    for name, width in (("prefill_8", 8), ("decode", 1)):
        sig = record["signatures"][name]
        assert sig["inputs"] == {
            "tokens": [1, width],
            "input_pos": [width],
            **dict.fromkeys(kv, cache),
        }
    assert set(record["signatures"]["prefill_8"]["outputs"]) == kv
    assert record["signatures"]["decode"]["outputs"]["logits"] == [
        1,
        1,
        trained.tokenizer.vocab_size,
    ]
    assert record["max_abs_diff"] < 1e-4 and abs(record["perplexity_increase"]) < 1e-5
    greedy = record["greedy"]
    assert record["greedy_identical"] and all(r["keras"] == r["litertlm"] for r in greedy)
    # One prompt longer than the largest bucket (the engine prefills it in chunks) and a
    # second turn in the same session, continuing the first turn's answer.
    assert any(len(trained.tokenizer.encode(r["prompt"])) > 8 for r in greedy)
    assert [r["turn"] for r in greedy][-2:] == [1, 2] and greedy[-1]["context_prompts"]
    assert record["stop_tokens"] == [trained.tokenizer.eos_id] and record["start_token"] is None
    on_disk = json.loads((target / "verification.json").read_text())
    assert on_disk["greedy"] == greedy and on_disk["versions"]["litert_lm_api"] == "0.18.1"


def test_chat_template_accepts_the_engines_content_parts():
    import jinja2

    template = (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] }}"
        "{% endfor %}"
    )
    adapted = jinja2.Environment().from_string(engine_chat_template(template))
    as_string = [{"role": "user", "content": "hi"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert adapted.render(messages=as_string) == adapted.render(messages=as_parts) == "<|user|>hi"


def test_engine_streams_token_by_token(float_export, trained):
    target, record = float_export
    first = record["greedy"][0]
    with LiteRTLMEngine(str(target / "model.litertlm")) as engine:
        turn = engine.turns([first["prompt"]], first["max_new_tokens"])[0]
    assert turn.text == first["keras"]
    assert turn.chunks == turn.decode_tokens > 1  # one streamed piece per generated token
    assert not any(p.name.endswith("xnnpack_cache") for p in target.iterdir())


def test_a_mismatch_names_prompt_and_token_and_writes_nothing(
    trained, eval_ids, tmp_path, monkeypatch
):
    real = litertlm_export.keras_turns

    def off_by_one(trained, prompts, max_new):  # Keras' reference with its 2nd token changed
        turns = real(trained, prompts, max_new)
        turns[0][1] = (turns[0][1] + 1) % trained.tokenizer.vocab_size
        return turns

    monkeypatch.setattr(litertlm_export, "keras_turns", off_by_one)
    target = tmp_path / "litertlm_none"
    with pytest.raises(VerificationError) as error:
        export_litertlm(trained, str(target), "none", eval_ids=eval_ids, verify_windows=1)
    message = str(error.value)
    assert "for prompt 'ROMEO:'" in message and "new token 2 (Keras id" in message
    assert message.endswith(f"nothing written to {target}")
    assert not list(tmp_path.iterdir())


def test_int4_bundle_is_smaller_and_records_its_perplexity(
    float_export, trained, eval_ids, tmp_path
):
    record = export_litertlm(
        trained, str(tmp_path / "q"), "int4", eval_ids=eval_ids, verify_windows=1
    )
    assert record["weight_bits"] == 4 and record["granularity"] == "BLOCKWISE_32"
    assert record["tflite_bytes"] < float_export[1]["tflite_bytes"]
    assert -0.05 < record["perplexity_increase"] < 0.10  # the default int4 budget
    assert record["affine_int4_kernels"] == 6 * trained.model.num_layers  # q, k, v, o, 2 MLP
    assert record["int8_token_table"]
    assert record["duplicate_buffer_bytes_removed"] > 0  # the token table's per-signature copies
    assert all(isinstance(r["litertlm"], str) for r in record["greedy"])


def test_identical_buffers_are_shared_without_changing_outputs(trained):
    import numpy as np
    from litert_quantizer import qtyping, quantizer

    float_blob, _ = convert_litertlm(trained.model, [8], "none")
    q = quantizer.Quantizer(bytearray(float_blob))
    q.add_dynamic_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8
    )
    raw = bytes(q.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
    shared, saved = share_identical_buffers(raw)
    assert saved > 0 and len(shared) <= len(raw) - saved
    ids = np.arange(1, 9, dtype=np.int32)
    assert np.array_equal(
        ContractLM(raw).teacher_forced_logits(ids), ContractLM(shared).teacher_forced_logits(ids)
    )


def test_cli_export_and_streaming_generate(trained_workdir):
    proc = run_cli(
        "export", f"--workdir={trained_workdir}", "--format=litertlm", "--verify_examples=1"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "greedy_identical          True" in proc.stdout
    path = Path(trained_workdir) / "export" / "litertlm_none" / "model.litertlm"
    args = [f"--workdir={trained_workdir}", "--prompt=KING:", "--max_new_tokens=12"]
    keras_out = run_cli("generate", *args, "--backend=keras")
    engine_out = run_cli("generate", *args, "--backend=litertlm")
    assert engine_out.returncode == 0, engine_out.stderr[-2000:]
    assert engine_out.stdout == keras_out.stdout
    assert "W0000" not in engine_out.stderr  # the engine's load chatter stays out

    # The TensorFlow-free example streams the same text from the bundle alone.
    example = subprocess.run(
        [sys.executable, "examples/litert_generate.py", str(path), "KING:", "12"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert example.returncode == 0, example.stderr[-2000:]
    assert example.stdout == keras_out.stdout

    # Bad input: one line naming the flag.
    proc = run_cli("generate", *args, "--backend=litertlm", "--quantize=int8")
    assert proc.returncode != 0 and "--backend=litertlm" in last_stderr_line(proc)
    proc = run_cli("export", f"--workdir={trained_workdir}", "--format=tflite", "--quantize=int4")
    assert proc.returncode != 0 and "--quantize=int4" in last_stderr_line(proc)
