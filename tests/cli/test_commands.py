"""The commands as a user runs them: train → generate → export → evaluate, and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def test_generate_same_seed_same_text(trained_workdir):
    args = [f"--workdir={trained_workdir}", "--prompt=ROMEO:", "--max_new_tokens=20",
            "--sampler=top_p", "--top_p=0.9", "--temperature=0.8"]
    first = run_cli("generate", *args, "--seed=1")
    # A new interpreter (its own hash seed and import order), not a fork like the others.
    second = run_cli("generate", *args, "--seed=1", fresh=True)
    other = run_cli("generate", *args, "--seed=2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.startswith("ROMEO:")
    assert first.stdout == second.stdout
    assert first.stdout != other.stdout


def test_export_saved_model_is_verified_and_serves_strings(trained_workdir):
    proc = run_cli("export", f"--workdir={trained_workdir}", "--format=saved_model")
    assert proc.returncode == 0, proc.stderr[-2000:]
    target = Path(trained_workdir) / "export" / "saved_model"
    record = json.loads((target / "verification.json").read_text())
    assert record["match"] is True
    assert record["keras"] == record["saved_model"]
    assert "serving_default" in record["signatures"]

    # The saved_model backend gives the same sampled text as the Keras backend.
    args = [f"--workdir={trained_workdir}", "--prompt=KING:", "--max_new_tokens=16",
            "--sampler=top_k", "--top_k=20", "--temperature=0.9", "--seed=7"]
    keras_out = run_cli("generate", *args, "--backend=keras")
    saved_out = run_cli("generate", *args, "--backend=saved_model")
    assert keras_out.returncode == 0 and saved_out.returncode == 0, saved_out.stderr[-2000:]
    assert keras_out.stdout == saved_out.stdout


def test_evaluate_updates_metrics(trained_workdir):
    proc = run_cli("evaluate", f"--workdir={trained_workdir}", "--max_batches=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((Path(trained_workdir) / "metrics.json").read_text())
    assert metrics["eval_tokens"] == 3 * 16 * 32
    assert 1.0 < metrics["perplexity"] < 400


def _wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"train exited early: {proc.stderr.read()[-2000:]}")
        if list((workdir / "checkpoints").glob("ckpt-*.index")):
            return
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_training_resumes(corpus_file, tmp_path, sig):
    workdir = tmp_path / "w"
    args = [sys.executable, "-m", "tfllm.cli.train", "--config=configs/gpt_tiny.py",
            f"--workdir={workdir}", *tiny_overrides(corpus_file, steps=100000)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(args, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(workdir, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr[-2000:]
        assert "checkpoint saved" in stderr.strip().splitlines()[-1]
        assert "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    saved = max(int(p.name.split("-")[1].split(".")[0])
                for p in (workdir / "checkpoints").glob("ckpt-*.index"))
    rerun = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
                    *tiny_overrides(corpus_file, steps=saved + 10))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resuming from step {saved}" in rerun.stdout
    assert json.loads((workdir / "metrics.json").read_text())["step"] == saved + 10
