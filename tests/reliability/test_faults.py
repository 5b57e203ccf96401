"""Fault tests: NaN mid-run, kill -9 during checkpoint saves and exports, two
writers on one workdir. Nothing saved may be lost or torn."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, build_trainer, last_stderr_line, run_cli, tiny_config, tiny_overrides

from tfllm.cli.common import setup_runtime
from tfllm.training.trainer import NonFiniteLoss

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def test_nan_mid_run_stops_cleanly_and_keeps_the_last_good_checkpoint(corpus_file, tmp_path):
    config = tiny_config(corpus_file, steps=60)
    setup_runtime(config)
    trainer = build_trainer(config, tmp_path / "w")
    real_loop, calls = trainer._train_loop, []

    def poisoned_loop(iterator, n):
        calls.append(int(n))
        if len(calls) == 3:  # after the step-20 checkpoint: the weights diverge
            weight = trainer.model.weights[0]
            weight.assign(np.full(weight.shape, np.nan, weight.dtype))
        return real_loop(iterator, n)

    trainer._train_loop = poisoned_loop
    with pytest.raises(NonFiniteLoss, match="stopped without saving"):
        trainer.train()
    latest = tf.train.latest_checkpoint(str(tmp_path / "w" / "checkpoints"))
    assert latest.endswith("ckpt-20")
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    assert json.loads((tmp_path / "w" / "metrics.json").read_text())["step"] == 20


def _latest_step(workdir: Path) -> int:
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes(corpus_file, tmp_path):
    """Checkpoints every 10 steps (a save every loop), killed at random times."""
    workdir = tmp_path / "w"
    args = [sys.executable, "-m", "tfllm.cli.train", "--config=configs/gpt_tiny.py",
            f"--workdir={workdir}", *tiny_overrides(corpus_file, steps=100000),
            "--config.train.checkpoint_every=10", "--config.train.eval_every=1000",
            "--config.train.max_checkpoints=2"]
    rng = random.Random(0)
    for _ in range(3):
        before = _latest_step(workdir)
        proc = subprocess.Popen(args, cwd=str(REPO), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while _latest_step(workdir) <= before and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in the next saves
        proc.kill()
        proc.wait()
    saved = _latest_step(workdir)
    rerun = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
                    *tiny_overrides(corpus_file, steps=saved + 10),
                    "--config.train.checkpoint_every=10")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resuming from step {saved}" in rerun.stdout
    assert not (workdir / ".lock").exists()


@pytest.mark.slow
def test_kill_9_during_export_leaves_the_previous_export_intact(trained_workdir, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(trained_workdir, workdir)
    first = run_cli("export", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr[-2000:]
    target = workdir / "export" / "saved_model"
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    proc = subprocess.Popen([sys.executable, "-m", "tfllm.cli.export", f"--workdir={workdir}",
                             "--max_new_tokens=7"], cwd=str(REPO), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((workdir / "export").glob(".saved_model.*.tmp")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    time.sleep(1.0)  # mid-write
    proc.kill()
    proc.wait()
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before  # byte for byte the previous export

    # The next export cleans the killed attempt's temp dir and the stale lock.
    again = run_cli("export", f"--workdir={workdir}", "--max_new_tokens=7")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list((workdir / "export").glob(".saved_model.*.tmp"))
    assert json.loads((target / "verification.json").read_text())["max_new_tokens"] == 7


def test_second_writer_on_the_same_workdir_is_refused(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        import socket

        (workdir / ".lock").write_text(json.dumps({
            "pid": holder.pid, "host": socket.gethostname(), "command": "tfllm-train",
            "started": "now"}))
        proc = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}")
        assert proc.returncode != 0
        line = last_stderr_line(proc)
        assert "is in use by tfllm-train" in line and str(holder.pid) in line, line
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_recovered(tmp_path):
    from tfllm.utils.lock import WorkdirLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / ".lock").write_text(json.dumps({
        "pid": dead.pid, "host": socket.gethostname(), "command": "tfllm-train",
        "started": "then"}))
    with WorkdirLock(str(tmp_path), "test"):
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text("{torn")  # a lock torn by a crash mid-write
    with WorkdirLock(str(tmp_path), "test"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
