"""tfllm-pipeline end to end with tiny settings: every stage, the report, and resume."""

import json

import pytest
from conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def test_pipeline_runs_every_stage_then_skips_them(corpus_file, tmp_path):
    workdir = tmp_path / "p"
    args = ["--config=configs/gpt_tiny.py", f"--workdir={workdir}",
            *tiny_overrides(corpus_file, steps=30)]
    proc = run_cli("pipeline", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (workdir / "report.md").read_text()
    for section in ("## Language model", "## Samples", "## Export", "## Compression",
                    "## Reproduce", "## Environment", "loss_curve.png"):
        assert section in report, section
    assert (workdir / "loss_curve.png").stat().st_size > 1000
    samples = json.loads((workdir / "samples.json").read_text())["samples"]
    assert len(samples) == 4 and all(s["completion"] for s in samples)  # 2 prompts × 2 rules
    verification = json.loads(
        (workdir / "export" / "saved_model" / "verification.json").read_text())
    assert verification["match"] is True
    edge = json.loads(
        (workdir / "export" / "tflite_dynamic" / "verification.json").read_text())
    assert edge["quantize"] == "dynamic" and edge["perplexity_increase"] < 0.05
    assert "export/tflite_dynamic/model.tflite" in report
    page = (workdir / "report.html").read_text()  # self-contained: the plot is inlined
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert 'src="data:image/png;base64,' in page and 'src="loss_curve.png"' not in page
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["step"] == 30 and metrics["full_eval_perplexity"] > 1
    pruned = json.loads((workdir / "compressed" / "prune50" / "compression.json").read_text())
    assert pruned["method"] == "prune" and pruned["sparsity"] >= 0.49
    assert (workdir / "compressed" / "prune50" / "export" / "tflite_dynamic" / "model.tflite"
            ).is_file()

    again = run_cli("pipeline", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("train", "evaluate", "samples", "export", "tflite", "compress"):
        assert f"{stage}: already done, skipping" in again.stdout, again.stdout[-2000:]


def test_pipeline_rejects_unknown_force_stage(tmp_path):
    proc = run_cli("pipeline", f"--workdir={tmp_path}", "--force=everything")
    assert proc.returncode != 0
    assert "--force" in proc.stderr and "Traceback" not in proc.stderr
