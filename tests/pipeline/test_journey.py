"""The journey (`tfllm-pipeline`'s default config) end to end with tiny parts: every
stage, the report and its plots, results.json, resume, --force and bad input."""

import json

import pytest
from conftest import last_stderr_line, run_cli

pytestmark = pytest.mark.slow

STEPS = 12


def tiny_journey_overrides() -> list[str]:
    """Every part of configs/pipeline.py shrunk to seconds (bundled LM and SST-2 data)."""
    args = []
    for part in ("lm", "transformer", "cnn", "mlp", "distil.student"):
        args += [
            f"--config.{part}.train.num_steps={STEPS}",
            f"--config.{part}.train.eval_every={STEPS}",
            f"--config.{part}.train.checkpoint_every={STEPS}",
            f"--config.{part}.train.steps_per_loop={STEPS // 2}",
            f"--config.{part}.train.warmup_steps=0",
        ]
    for part in ("lm", "cnn", "mlp"):
        args.append(f"--config.{part}.tokenizer.vocab_size=400")
    return args + [
        "--config.lm.model.num_layers=2",
        "--config.lm.model.hidden_dim=32",
        "--config.lm.model.intermediate_dim=64",
        "--config.lm.model.max_length=32",
        "--config.lm.train.batch_size=8",
        "--config.lm.export.max_new_tokens=8",
        "--config.transformer.model.max_length=32",
        "--config.distil.student.model.max_length=32",
        "--config.distil.student.model.hidden_dim=16",
        "--config.distil.student.model.intermediate_dim=32",
        "--config.cnn.model.embedding_dim=16",
        "--config.cnn.model.conv_filters=8",
        "--config.mlp.model.embedding_dim=16",
        "--config.benchmark.steps=1",
        "--config.benchmark.warmup=1",
        "--config.benchmark.repeats=1",
        "--config.benchmark.decode_batch=2",
        "--config.benchmark.decode_prompt_len=4",
        "--config.benchmark.decode_new_tokens=4",
    ]


def test_journey_runs_every_stage_reports_and_resumes(tmp_path):
    workdir = tmp_path / "j"
    args = [f"--workdir={workdir}", *tiny_journey_overrides()]
    proc = run_cli("pipeline", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[22/22] report" in proc.stdout and "ETA" in proc.stdout

    report = (workdir / "report.md").read_text()
    for section in ("## Language model", "## Text classifiers (SST-2)", "## Compression",
                    "## Speed", "## Stages", "## Reproduce", "## Environment"):
        assert section in report, section
    for png in ("lm_curve.png", "classifier_curves.png", "pareto.png", "latency.png"):
        assert (workdir / png).stat().st_size > 1000, png
        assert f"]({png})" in report
    page = (workdir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 5

    results = json.loads((workdir / "results.json").read_text())
    assert results["profile"] == "quick"
    assert results["language_model"]["saved_model_match"] is True
    assert results["language_model"]["perplexity"] > 1
    rows = results["classifiers"]
    assert len(rows) == 5  # three families, the pruned and the distilled transformer
    for name, row in rows.items():
        assert 0.0 <= row["test_accuracy"] <= 1.0, name
        assert row["litert_bytes"] > 0 and row["litert_ms"] > 0, name
    for family in ("transformer", "cnn", "mlp"):
        metrics = json.loads((workdir / "classifiers" / family / "metrics.json").read_text())
        assert metrics["test_split"]["num_examples"] == 872  # bundled SST-2 test.tsv
        assert metrics["step"] == STEPS
    student = json.loads((workdir / "distil" / "compression.json").read_text())
    assert student["method"] == "distill" and student["num_params"] < student["teacher_params"]
    # The fine-tuned classifier starts from the journey's own LM.
    config = json.loads((workdir / "classifiers" / "transformer" / "config.json").read_text())
    assert config["train"]["init_from"] == str(workdir / "lm")
    bench = results["benchmark"]
    assert bench["train_tokens_per_second"] > 0 and bench["train_speedup_vs_keras_hub"] > 0

    again = run_cli("pipeline", *args, "--force=cnn.tflite")
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = [s for s in again.stdout.splitlines() if "already done, skipping" in s]
    assert len(skipped) == 20, again.stdout[-3000:]  # all but cnn.tflite and the report
    assert "cnn.tflite: done in" in again.stdout


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--config.cnn.train.batch_size=0"], "config.cnn.train.batch_size"),
        (["--config.distil.student.train.num_steps=-1"], "config.distil.student.train.num_steps"),
        (["--force=mlp.train"], "--force=mlp.train"),
        (["--force=lm.everything"], "--force: unknown stage(s) lm.everything"),
        (["--config=configs/mlp_sst2.py", "--profile=full"], "--profile"),
    ],
)
def test_journey_bad_input_is_one_line(tmp_path, flags, expected):
    proc = run_cli("pipeline", f"--workdir={tmp_path / 'j'}", *flags)
    assert proc.returncode != 0
    assert expected in last_stderr_line(proc), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "j" / "lm").exists()  # nothing half-written
