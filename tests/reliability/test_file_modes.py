"""Workdir files follow the umask (issue 24, item 6): the atomic writers' temp
files (mkstemp 0600, mkdtemp 0700) get the mode a plain write would have had,
so a serving process under another user can read an export."""

import os
import stat

import pytest
from conftest import run_cli, tiny_overrides

from tfllm.utils.io import atomic_directory, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Sets this process's umask for one test, restoring it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [
    (0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o027, 0o640, 0o750)])
def test_atomic_writers_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    atomic_write_json(tmp_path / "metrics.json", {"step": 1})
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    with atomic_directory(tmp_path / "export" / "saved_model") as tmp:
        atomic_write_json(tmp / "verification.json", {"ok": True})
        (tmp / "plain.txt").write_text("x")
    assert _mode(tmp_path / "metrics.json") == file_mode
    assert _mode(tmp_path / "report.html") == file_mode
    assert _mode(tmp_path / "export") == dir_mode
    assert _mode(tmp_path / "export" / "saved_model") == dir_mode
    assert _mode(tmp_path / "export" / "saved_model" / "verification.json") == file_mode
    assert _mode(tmp_path / "export" / "saved_model" / "plain.txt") == file_mode
    # Rewriting an existing file follows the umask too.
    atomic_write_json(tmp_path / "metrics.json", {"step": 2})
    assert _mode(tmp_path / "metrics.json") == file_mode


@pytest.mark.slow  # a fresh interpreter: the fork server's umask is its own
def test_a_trained_workdir_is_readable_by_others_under_umask_022(tmp_path, corpus_file):
    workdir = tmp_path / "w"
    proc = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
                   *tiny_overrides(corpus_file, steps=10), "--config.train.eval_every=10",
                   "--config.train.checkpoint_every=10", fresh=True, umask=0o022)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ["config.json", "metrics.json", "history.json"]:
        assert _mode(workdir / name) == 0o644, name
    assert _mode(workdir / "tokenizer") == 0o755
    for path in (workdir / "tokenizer").iterdir():
        assert _mode(path) == 0o644, path
