"""`tfllm-pipeline --profile=pretrained` on the tiny pretrained fixtures, laid out as
../shared/tools/fetch-pretrained lays out the real models: every stage runs, the
report's numbers are the parts' own, the base perplexity is checked against a
numpy computation, a re-run skips what is current and redoes what a changed
setting made stale, and bad input fails in one line before anything is written.
"""

import json
import math
import os
import shutil

import numpy as np
import pytest
from conftest import REPO, last_stderr_line, run_cli, tiny_pretrained_journey_overrides

pytestmark = pytest.mark.slow

FIXTURES = os.path.join(REPO, "tests", "fixtures", "pretrained")


def _fetched(root) -> str:
    """The tiny fixtures under the names the fetch tool gives the real models."""
    os.makedirs(root / "smollm2")
    shutil.copy(
        os.path.join(FIXTURES, "llama_tiny_gguf", "model.gguf"),
        root / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    shutil.copytree(os.path.join(FIXTURES, "bert_tiny"), root / "minilm")
    return str(root)


def _pipeline(workdir, pretrained, *extra):
    return run_cli(
        "pipeline",
        "--profile=pretrained",
        f"--pretrained_dir={pretrained}",
        f"--workdir={workdir}",
        *tiny_pretrained_journey_overrides(),
        *extra,
    )


def _read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained_journey")
    pretrained = _fetched(root / "fetched")
    workdir = root / "run"
    proc = _pipeline(workdir, pretrained)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, pretrained, proc.stdout


def test_every_stage_runs_and_the_report_holds_the_parts_numbers(journey):
    workdir, _, stdout = journey
    for stage in ("import.minilm", "minilm.tflite", "distil", "smollm2.baseline", "report"):
        assert f"] {stage}: done" in stdout, stage
    results = _read(workdir / "results.json")
    teacher = _read(workdir / "minilm_sst2" / "metrics.json")
    assert results["classifier"]["test_accuracy"] == teacher["test_split"]["accuracy"]
    assert results["classifier"]["test_examples"] == 872  # SST-2's test split, whole
    student = _read(workdir / "cnn_student" / "metrics.json")
    assert results["student"]["test_accuracy"] == student["test_split"]["accuracy"]
    for part in ("classifier", "student"):
        assert results[part]["tflite_verified"] is True, part
    assert results["classifier"]["saved_model_verified"] is True
    # The student copied the teacher's token table, so it took the teacher's width
    # (and no longer rows than the teacher reads).
    teacher_model = _read(workdir / "minilm_sst2" / "config.json")["model"]
    student_model = _read(workdir / "cnn_student" / "config.json")["model"]
    assert student_model["embedding_dim"] == teacher_model["hidden_dim"]
    assert student_model["max_length"] <= teacher_model["max_length"]
    lm = results["smollm2"]
    assert lm["steps"] == 4 and 0 < lm["trainable_params"] < lm["total_params"]
    assert math.isfinite(lm["base_perplexity"]) and math.isfinite(lm["perplexity"])
    report = (workdir / "report.md").read_text()
    assert f"{lm['base_perplexity']:.2f} → {lm['perplexity']:.2f}" in report
    assert "tfllm-import --source=" in report and (workdir / "report.html").is_file()
    samples = _read(workdir / "smollm2_lora" / "samples.json")["samples"]
    assert {s["prompt"] for s in samples} == {"ROMEO:", "JULIET:\nO", "First Citizen:\n"}


def test_base_perplexity_matches_numpy_on_the_held_out_tokens(journey):
    """The imported model's perplexity on exactly the tokens the fine-tune holds out
    (the eval split at the fine-tune's context), recomputed here window by window."""
    from tfllm.data.sources import lm_token_streams, load_text_splits
    from tfllm.inference.loading import load_trained

    workdir, _, _ = journey
    lora = load_trained(str(workdir / "smollm2_lora"))
    base = load_trained(str(workdir / "imported" / "smollm2"))
    _, eval_ids = lm_token_streams(lora.config, lora.tokenizer, load_text_splits(lora.config.data))
    ids = np.asarray(eval_ids)
    seq = int(lora.config.model.max_length)
    batch = int(lora.config.train.batch_size)
    windows = (len(ids) - 1) // seq // batch * batch
    nll, count = 0.0, 0
    for w in range(windows):
        chunk = ids[w * seq : w * seq + seq + 1]
        logits = base.model(chunk[None, :-1], training=False).numpy()[0].astype(np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        nll -= log_probs[np.arange(seq), chunk[1:]].sum()
        count += seq
    recorded = _read(workdir / "smollm2_lora" / "base_perplexity.json")
    assert recorded["tokens"] == count
    np.testing.assert_allclose(recorded["perplexity"], math.exp(nll / count), rtol=1e-4)


def test_rerun_skips_current_stages_and_redoes_stale_ones(journey):
    workdir, pretrained, _ = journey
    proc = _pipeline(workdir, pretrained, "--config.distil.temperature=3.0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in ("import.minilm", "import.smollm2", "minilm.train", "smollm2.train"):
        assert f"{stage}: already done, skipping" in proc.stdout, stage
    assert "re-running distil: config.distil changed since it was made" in proc.stdout
    assert "smollm2.samples: already done" in proc.stdout


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--pretrained_dir={missing}"], "--pretrained_dir: no such directory"),
        (["--pretrained_dir={empty}"], "has no minilm (run ../shared/tools/fetch-pretrained"),
        (["--config.smollm2.train.lora_rank=-1"], "config.smollm2.train.lora_rank"),
        (["--config.minilm.train.batch_size=0"], "config.minilm.train.batch_size"),
        (["--force=minilm.train"], "--force=minilm.train"),
        (["--force=lm.train"], "--force: unknown stage(s) lm.train"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, expected):
    (tmp_path / "empty").mkdir()
    pretrained = _fetched(tmp_path / "fetched")
    flags = [f.format(missing=tmp_path / "nowhere", empty=tmp_path / "empty") for f in flags]
    proc = _pipeline(tmp_path / "run", pretrained, *flags)
    assert proc.returncode != 0
    assert expected in last_stderr_line(proc), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "imported").exists()


def test_pretrained_dir_needs_the_pretrained_profile(tmp_path):
    proc = run_cli("pipeline", f"--workdir={tmp_path / 'run'}", f"--pretrained_dir={tmp_path}")
    assert proc.returncode != 0
    assert "--pretrained_dir: only with --profile=pretrained" in last_stderr_line(proc)
