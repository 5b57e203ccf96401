"""tfllm-train / -evaluate / -generate on a classifier workdir, and classifier bad input."""

from __future__ import annotations

import json
import os

from conftest import classifier_overrides, last_stderr_line, run_cli, write_tsv


def test_train_wrote_labels_metrics_and_confusion_matrix(trained_classifier):
    metrics = json.loads(open(os.path.join(trained_classifier, "metrics.json")).read())
    for key in ("step", "loss", "accuracy", "macro_f1", "micro_f1", "roc_auc", "eval_loss"):
        assert key in metrics, key
    assert metrics["accuracy"] > 0.9
    assert os.path.isfile(os.path.join(trained_classifier, "labels.json"))
    assert os.path.isfile(os.path.join(trained_classifier, "confusion_matrix.png"))


def test_evaluate_test_split_and_file(trained_classifier, labelled_files):
    proc = run_cli("evaluate", f"--workdir={trained_classifier}", "--split=test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "macro" in proc.stdout and "sport" in proc.stdout
    proc = run_cli(
        "evaluate", f"--workdir={trained_classifier}", f"--data={labelled_files['test']}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(open(os.path.join(trained_classifier, "metrics.json")).read())
    assert metrics["test_split"]["num_examples"] == 150
    assert metrics["data"]["accuracy"] == metrics["test_split"]["accuracy"]
    assert os.path.isfile(os.path.join(trained_classifier, "confusion_matrix_test.png"))


def test_evaluate_an_earlier_checkpoint_files_it_apart(trained_classifier):
    """`--step` scores a kept earlier checkpoint without touching the final one's numbers."""
    path = os.path.join(trained_classifier, "metrics.json")
    before = json.loads(open(path).read())
    proc = run_cli("evaluate", f"--workdir={trained_classifier}", "--split=test", "--step=75")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ckpt-75" in proc.stdout
    after = json.loads(open(path).read())
    early = after.pop("by_step")["75"]["test_split"]
    before.pop("by_step", None)
    assert after == before  # the final checkpoint's record is as it was
    assert early["num_examples"] == 150 and 0.0 <= early["accuracy"] <= 1.0
    proc = run_cli("evaluate", f"--workdir={trained_classifier}", "--step=70")
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "--step: no checkpoint of step 70" in line and "kept: 75, 150" in line, line


def test_unknown_label_in_eval_file_names_the_line(trained_classifier, tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [("goal match", "sport"), ("a song", "politics")])
    proc = run_cli("evaluate", f"--workdir={trained_classifier}", f"--data={path}")
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert f"{path}:3" in line and "unknown label 'politics'" in line, line


def test_missing_label_column_is_a_clear_error(labelled_files, tmp_path):
    overrides = classifier_overrides(labelled_files, "mlp_classifier", steps=20)
    proc = run_cli(
        "train",
        "--config=configs/mlp_sst2.py",
        f"--workdir={tmp_path / 'w'}",
        *overrides,
        "--config.data.label_field=sentiment",
    )
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "header has no column 'sentiment'" in line and labelled_files["train"] in line, line
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_single_class_training_data_is_rejected(labelled_files, tmp_path):
    path = write_tsv(tmp_path / "one.tsv", [(f"goal {i}", "sport") for i in range(50)])
    files = dict(labelled_files, train=path)
    proc = run_cli(
        "train",
        "--config=configs/mlp_sst2.py",
        f"--workdir={tmp_path / 'w'}",
        *classifier_overrides(files, "mlp_classifier", steps=20),
    )
    assert proc.returncode != 0
    assert "at least 2 distinct labels" in last_stderr_line(proc)


def test_generate_refuses_a_classifier(trained_classifier):
    proc = run_cli("generate", f"--workdir={trained_classifier}", "--prompt=hello")
    assert proc.returncode != 0
    assert "classifies text" in last_stderr_line(proc)


def test_text_format_for_a_classifier_is_a_config_error(tmp_path):
    proc = run_cli(
        "train",
        "--config=configs/cnn_sst2.py",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.train_path={tmp_path}/x.txt",
        "--config.data.format=text",
    )
    assert proc.returncode != 0
    assert "config.data.format" in last_stderr_line(proc)
