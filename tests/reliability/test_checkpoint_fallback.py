"""A damaged latest checkpoint (issue 24, item 3): loading and resuming fall back
to the newest readable one with one warning line; with none readable, one error
line names the file. Saves are flushed to disk before they are declared written."""

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import last_stderr_line, run_cli, tiny_overrides

from tfllm.errors import WorkdirError
from tfllm.inference.loading import load_trained
from tfllm.training import checkpoints

DATA = "data-00000-of-00001"


def _truncate(path: Path) -> None:
    """Cut a file to half its size, as a power loss or a full disk leaves it."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.fixture
def damaged(trained_workdir, tmp_path) -> Path:
    """A copy of the trained workdir (checkpoints 20 and 40) with ckpt-40 cut short."""
    workdir = tmp_path / "w"
    shutil.copytree(trained_workdir, workdir)
    _truncate(workdir / "checkpoints" / f"ckpt-40.{DATA}")
    return workdir


def _unreadable_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "is unreadable" in line]


def test_load_trained_falls_back_to_the_previous_checkpoint(damaged, caplog):
    with caplog.at_level(logging.WARNING):
        trained = load_trained(str(damaged))
    assert trained.step == 20 and trained.checkpoint.endswith("ckpt-20")
    said = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert f"ckpt-40.{DATA}" in said[0] and "ckpt-20 (step 20)" in said[0], said[0]
    # The weights are ckpt-20's.
    reader = tf.train.load_checkpoint(str(damaged / "checkpoints" / "ckpt-20"))
    embedding = next(k for k in reader.get_variable_to_shape_map()
                     if k.startswith("model/") and "embeddings" in k and "VARIABLE_VALUE" in k)
    values = reader.get_tensor(embedding)
    assert any(w.shape == values.shape and (w.numpy() == values).all()
               for w in trained.model.weights)


def test_generate_falls_back_with_one_warning_line(damaged):
    proc = run_cli("generate", f"--workdir={damaged}", "--prompt=ROMEO:", "--max_new_tokens=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = _unreadable_lines(proc.stderr)
    assert len(lines) == 1 and f"ckpt-40.{DATA}" in lines[0] and "ckpt-20" in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_train_resume_continues_from_the_previous_checkpoint(damaged, corpus_file):
    proc = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={damaged}",
                   *tiny_overrides(corpus_file, steps=40))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Resuming from step 20" in proc.stdout, proc.stdout[-2000:]
    assert len(_unreadable_lines(proc.stderr)) == 1, proc.stderr[-2000:]
    # Step 40 was trained again and saved whole.
    from tfllm.utils.checkpoints import unreadable_file

    assert unreadable_file(str(damaged / "checkpoints" / "ckpt-40")) is None
    assert json.loads((damaged / "metrics.json").read_text())["step"] == 40
    assert load_trained(str(damaged)).step == 40


def test_no_readable_checkpoint_is_one_error_line(damaged, corpus_file):
    _truncate(damaged / "checkpoints" / f"ckpt-20.{DATA}")
    with pytest.raises(WorkdirError, match=f"ckpt-40.{DATA}: checkpoint unreadable"):
        load_trained(str(damaged))
    for command, args in [
        ("generate", ["--prompt=hi", "--max_new_tokens=2"]),
        ("train", ["--config=configs/gpt_tiny.py", *tiny_overrides(corpus_file, steps=60)]),
    ]:
        proc = run_cli(command, f"--workdir={damaged}", *args)
        assert proc.returncode != 0, (command, proc.stdout[-1000:])
        line = last_stderr_line(proc)
        assert line.startswith(f"tfllm-{command}: error: "), (command, proc.stderr[-2000:])
        assert f"ckpt-40.{DATA}" in line and "no readable checkpoint" in line, line
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (damaged / "checkpoints" / "ckpt-60.index").exists()


def test_a_save_is_flushed_before_the_records_name_it(tmp_path, monkeypatch):
    """fsync of the checkpoint's data and index files, the `checkpoint` state
    file and the directory, before history.json / metrics.json are written."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    checkpoint = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    directory = tmp_path / "checkpoints"
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=2)
    checkpoints.save(manager, 7, True, str(tmp_path), [{"step": 7}], lambda: {"step": 7})

    def first(name: str) -> int:
        return next(i for i, path in enumerate(synced) if path == str(name))

    records = next(i for i, path in enumerate(synced) if ".history.json." in path)
    for name in [directory / f"ckpt-7.{DATA}", directory / "ckpt-7.index",
                 directory / "checkpoint", directory]:
        assert first(name) < records, (name, synced)
