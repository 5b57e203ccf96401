"""Multi-process training on this machine: real clusters started by tfllm-launch.

Each test runs `tfllm-train` as a local TensorFlow cluster (one process per
task, TF_CONFIG per process) and checks what a user of that strategy relies
on: the same losses as one device (multi_worker), an agreed checkpoint on
SIGTERM, resume after kill -9, a parameter-server job that shards the
embedding, survives a dead worker and stops cleanly on a dead ps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import Cluster, last_stderr_line, python_module, run_cli, tiny_overrides

pytestmark = pytest.mark.slow

def train_cluster(workers: int, ps: int, args: list[str]) -> Cluster:
    """`tfllm-launch ... -- tfllm-train args...` with its output watched line by line."""
    return Cluster(workers, ps, python_module("tfllm.cli.train", *args))


def train_args(corpus: str, workdir: Path, strategy: str, steps: int, *extra: str) -> list[str]:
    return [
        "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
        *tiny_overrides(corpus, steps=steps), "--config.train.sample_tokens=0",
        f"--config.runtime.strategy={strategy}", *extra,
    ]


def losses(workdir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((workdir / "history.json").read_text())["history"]]


def test_multi_worker_two_processes_match_one_device(corpus_file, tmp_path):
    """2 workers x per-replica batch 4 see exactly the windows one device sees in
    its batch of 8 (the input pipelines split one shared order), so the summed
    gradients and the losses agree up to float32 summation order: rel. 1e-4."""
    single = run_cli("train", *train_args(corpus_file, tmp_path / "one", "default", 40))
    assert single.returncode == 0, single.stderr[-2000:]
    cluster = train_cluster(2, 0, train_args(corpus_file, tmp_path / "mw", "multi_worker", 40))
    assert cluster.wait() == 0, cluster.output()[-3000:]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "mw")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) / a < 1e-4, (one, two)
    metrics = json.loads((tmp_path / "mw" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "multi_worker"
    # only the chief (worker 0) keeps checkpoints; worker 1's throwaway copies are gone
    assert not [p for p in (tmp_path / "mw" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert "[worker 1] step 40/40" in cluster.output()


def test_multi_worker_sigterm_saves_an_agreed_step_and_kill_9_resumes(corpus_file, tmp_path):
    workdir = tmp_path / "w"
    never = "--config.train.checkpoint_every=100000"  # only the preemption save
    args = train_args(corpus_file, workdir, "multi_worker", 100000, never,
                      "--config.train.eval_every=100000")

    # A preemption notice (SIGTERM) reaches worker 1 only: both save the same step.
    cluster = train_cluster(2, 0, args)
    cluster.wait_for(r"\[worker 1\] step 20/")
    cluster.signal("worker 1", signal.SIGTERM)
    assert cluster.wait() == 130, cluster.output()[-3000:]
    saved = int(cluster.wait_for(r"\[worker 0\] .*interrupted at step (\d+)").group(1))
    assert f"[worker 1] tfllm-train: error: interrupted at step {saved}" in cluster.output()
    assert saved % 10 == 0 and saved >= 20

    # Restarted, both workers resume there; kill -9 one of them mid-run.
    cluster = train_cluster(2, 0, args)
    cluster.wait_for(rf"\[worker 0\] Resuming from step {saved}")
    cluster.wait_for(rf"\[worker 1\] Resuming from step {saved}")
    cluster.wait_for(rf"\[worker 0\] step {saved + 20}/")
    cluster.signal("worker 0", signal.SIGKILL)
    assert cluster.wait() == 128 + signal.SIGKILL
    assert "worker 0 failed with status 137; stopping the others" in cluster.output()

    # The same command (to a reachable end) resumes from the agreed checkpoint.
    args = train_args(corpus_file, workdir, "multi_worker", saved + 10, never)
    cluster = train_cluster(2, 0, args)
    assert cluster.wait() == 0, cluster.output()[-3000:]
    cluster.wait_for(rf"\[worker 1\] Resuming from step {saved}")
    assert json.loads((workdir / "metrics.json").read_text())["step"] == saved + 10


def test_parameter_server_shards_the_embedding_and_survives_a_dead_worker(corpus_file, tmp_path):
    workdir = tmp_path / "ps"
    args = train_args(corpus_file, workdir, "parameter_server", 80,
                      "--config.runtime.ps_shard_min_bytes=40000")  # only the 400x32 embedding
    cluster = train_cluster(2, 2, args)
    cluster.wait_for(r"\[chief 0\] step 20/80")
    cluster.signal("worker 1", signal.SIGKILL)
    assert cluster.wait() == 0, cluster.output()[-3000:]
    assert "worker 1 exited (137); the chief's coordinator carries on" in cluster.output()

    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["step"] == 80 and metrics["strategy"] == "parameter_server"
    assert metrics["sharded_variables"] == {"gpt/token_embedding/embeddings": 2}
    history = losses(workdir)
    assert history[-1] < history[0] - 0.5, history

    # The checkpoint is layout-free: one device, no cluster, same perplexity.
    evaluated = run_cli("evaluate", f"--workdir={workdir}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    after = json.loads((workdir / "metrics.json").read_text())
    assert after["perplexity"] == pytest.approx(metrics["perplexity"], rel=0.05)


def test_dead_parameter_server_ends_the_job_with_a_resumable_checkpoint(corpus_file, tmp_path):
    workdir = tmp_path / "ps"
    args = train_args(corpus_file, workdir, "parameter_server", 100000,
                      "--config.runtime.ps_shard_min_bytes=40000")
    cluster = train_cluster(2, 2, args)
    cluster.wait_for(r"\[chief 0\] step 30/")
    cluster.signal("ps 1", signal.SIGKILL)
    assert cluster.wait() == 75, cluster.output()[-3000:]
    error = cluster.wait_for(r"\[chief 0\] tfllm-train: error: (.*)").group(1)
    assert "/job:ps/replica:0/task:1" in error and "run the same command to resume" in error
    saved = int(re.search(r"ckpt-(\d+)", error).group(1))

    cluster = train_cluster(2, 2, train_args(corpus_file, workdir, "parameter_server", saved + 10,
                                       "--config.runtime.ps_shard_min_bytes=40000"))
    assert cluster.wait() == 0, cluster.output()[-3000:]
    cluster.wait_for(rf"\[chief 0\] Resuming from step {saved}")


def test_sigterm_to_a_parameter_server_launcher_saves_then_stops_the_cluster(
    corpus_file, tmp_path
):
    """SIGTERM to tfllm-launch reaches the chief first: it finishes the scheduled
    steps on the (still running) workers, saves, exits 130; then the launcher
    stops the workers and the ps. (Signalled all at once, the workers died, the
    chief's coordinator waited for them forever and nothing was saved.)"""
    workdir = tmp_path / "ps"
    never = "100000"  # no periodic checkpoint or eval: only the stop's save
    args = train_args(corpus_file, workdir, "parameter_server", 100000,
                      f"--config.train.checkpoint_every={never}",
                      f"--config.train.eval_every={never}")
    cluster = train_cluster(2, 1, args)
    try:
        cluster.wait_for(r"\[chief 0\] step 20/")
        signalled = time.time()
        cluster.proc.send_signal(signal.SIGTERM)
        status = cluster.proc.wait(timeout=60)
        seconds = time.time() - signalled
    finally:
        if cluster.proc.poll() is None:  # the bug: stop it the hard way
            for _ in range(2):
                cluster.proc.send_signal(signal.SIGTERM)
                time.sleep(2)
            cluster.proc.kill()
    time.sleep(0.2)  # let the reader drain the pipe
    assert status == 130, cluster.output()[-3000:]
    assert seconds < 60
    saved = int(cluster.wait_for(r"\[chief 0\] .*interrupted at step (\d+)").group(1))
    assert saved >= 20
    index = (workdir / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{saved}"' in index
    assert "[launch] chief exited with status 130; stopping the cluster" in cluster.output()


def test_sigterm_to_every_task_at_once_still_saves(corpus_file, tmp_path):
    """Kubernetes deleting a job signals every pod at once, not the chief first.
    The workers and ps keep serving until the chief has saved and exited (then
    exit 130 themselves), so the step the chief stopped at is in a checkpoint."""
    workdir = tmp_path / "ps"
    never = "100000"
    args = train_args(corpus_file, workdir, "parameter_server", 100000,
                      f"--config.train.checkpoint_every={never}",
                      f"--config.train.eval_every={never}")
    cluster = train_cluster(2, 1, args)
    try:
        cluster.wait_for(r"\[chief 0\] step 20/")
        pids = [int(cluster.wait_for(rf"\[launch\] {task}: pid (\d+)").group(1))
                for task in ("chief 0", "worker 0", "worker 1", "ps 0")]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        status = cluster.proc.wait(timeout=90)
    finally:
        if cluster.proc.poll() is None:
            cluster.proc.kill()
    time.sleep(0.2)
    assert status == 130, cluster.output()[-3000:]
    saved = int(cluster.wait_for(r"\[chief 0\] .*interrupted at step (\d+)").group(1))
    index = (workdir / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{saved}"' in index
    assert "[worker 0] worker 0: asked to stop; serving until the chief has saved" in cluster.lines


def test_parameter_server_without_a_ps_job_is_one_clear_line(corpus_file, tmp_path, monkeypatch):
    env_config = {"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"]},
                  "task": {"type": "chief", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(env_config))
    proc = run_cli("train", *train_args(corpus_file, tmp_path / "w", "parameter_server", 10))
    assert proc.returncode == 2  # a configuration error
    assert last_stderr_line(proc) == (
        "tfllm-train: error: TF_CONFIG: strategy 'parameter_server' needs a cluster with chief "
        "and worker and ps jobs; ps missing (cluster has chief, worker)"
    )


def test_unreachable_tpu_is_one_clear_line(corpus_file, tmp_path):
    proc = run_cli("train", *train_args(corpus_file, tmp_path / "w", "tpu", 10),
                   "--config.runtime.tpu=grpc://127.0.0.1:1")
    assert proc.returncode == 2  # a configuration error
    assert last_stderr_line(proc).startswith(
        "tfllm-train: error: config.runtime.tpu: no TPU reachable at 'grpc://127.0.0.1:1'"
    )
