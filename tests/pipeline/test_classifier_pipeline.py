"""tfllm-pipeline on a classifier config: its own six stages, the report, resume, --force."""

from __future__ import annotations

import json
import re

import pytest
from conftest import classifier_overrides, last_stderr_line, run_cli

pytestmark = pytest.mark.slow


def test_classifier_pipeline_runs_every_stage_then_skips_them(labelled_files, tmp_path):
    workdir = tmp_path / "c"
    args = [
        "--config=configs/mlp_sst2.py",
        f"--workdir={workdir}",
        *classifier_overrides(labelled_files, "mlp_classifier", steps=60),
    ]
    proc = run_cli("pipeline", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The classifier's own stage list: 6 stages, no samples.
    stages = ("train", "evaluate", "export", "tflite", "compress", "report")
    for i, stage in enumerate(stages, start=1):
        assert f"[{i}/6] {stage}: done" in proc.stdout, proc.stdout[-2000:]
    assert "samples" not in proc.stdout
    assert not (workdir / "samples.json").exists()

    metrics = json.loads((workdir / "metrics.json").read_text())
    test = metrics["test_split"]
    assert test["source"] == "test" and test["step"] == metrics["step"] == 60
    assert test["num_examples"] == 150 and 0.0 <= test["accuracy"] <= 1.0
    for png in ("loss_curve.png", "confusion_matrix.png", "confusion_matrix_test.png"):
        assert (workdir / png).stat().st_size > 1000, png
    verification = json.loads(
        (workdir / "export" / "saved_model" / "verification.json").read_text()
    )
    assert verification["match"] is True and verification["label_mismatches"] == 0
    edge = json.loads(
        (workdir / "export" / "tflite_dynamic" / "verification.json").read_text()
    )
    assert edge["quantize"] == "dynamic"
    assert 100 * edge["accuracy_drop"] <= edge["tolerance"]["max_accuracy_drop_points"]

    report = (workdir / "report.md").read_text()
    for section in (
        "## Classifier",
        "## Results",
        "## Per class (test split)",
        "## Export",
        "## Stages",
        "## Reproduce",
        "## Environment",
    ):
        assert section in report, section
    assert f"| accuracy | {metrics['accuracy']:.4f} | {test['accuracy']:.4f} |" in report
    for name in ("food", "music", "sport"):
        assert re.search(
            rf"^\| {name} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \d+ \|$", report, re.M
        ), name
    assert "](confusion_matrix_test.png)" in report and "](loss_curve.png)" in report
    assert "labels identical" in report
    assert "tfllm-train --config=configs/mlp_sst2.py" in report
    assert f"tfllm-evaluate --workdir={workdir} --split=test" in report
    assert f"tfllm-export --workdir={workdir}" in report
    assert "export/tflite_dynamic/model.tflite" in report
    assert "## Compression" in report and "| pruned 80% |" in report
    page = (workdir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # curves + two confusion matrices

    again = run_cli("pipeline", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    for i, stage in enumerate(stages[:-1], start=1):
        assert f"[{i}/6] {stage}: already done, skipping" in again.stdout, again.stdout[-2000:]
    assert "[6/6] report: done" in again.stdout
    assert "| train | 0 | skipped (done) |" in (workdir / "report.md").read_text()


def test_classifier_pipeline_rejects_lm_only_force_stage(labelled_files, tmp_path):
    proc = run_cli(
        "pipeline",
        "--config=configs/mlp_sst2.py",
        f"--workdir={tmp_path / 'c'}",
        "--force=samples",
        *classifier_overrides(labelled_files, "mlp_classifier", steps=60),
        fresh=True,  # as a user's: it fails before TF is imported, so TF logs nothing
    )
    assert proc.returncode != 0
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1, proc.stderr
    line = last_stderr_line(proc)
    assert "--force" in line and "samples" in line and "evaluate, export" in line, line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists()  # failed before any work
