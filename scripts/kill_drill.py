#!/usr/bin/env python
"""Kill drill: what SIGTERM and kill -9 cost a training run, measured.

  python scripts/kill_drill.py --out=docs/measurements/kill_drill.json

Trains configs/gpt_tiny.py with tiny overrides (the test suite's: 2 layers,
hidden 32, batch 8, 60 kB of Shakespeare; a periodic checkpoint every
`--checkpoint_every` steps, an inner loop of 10 steps) in four ways:

  single_sigterm    one process, SIGTERM to it
  single_kill9      one process, kill -9 to it
  multi_worker      `tfllm-launch --workers=2`, SIGTERM to the launcher
  parameter_server  `tfllm-launch --workers=2 --ps=1` (chief + 2 workers + 1 ps),
                    SIGTERM to the launcher

Each run is signalled mid-training: after its first periodic checkpoint and
one more inner loop. For each the drill reports the seconds from the signal
to the exit of the process signalled, its exit status, the last checkpoint
step on disk, and the steps lost: the step last reported before the signal
minus the step a re-run resumes from (0 when the stop saved at or after that
step). The re-run is the same command with `num_steps` = the resumed step +
10; it must print `Resuming from step N` and finish with status 0.

Prints a markdown table and writes the numbers as JSON. One drill takes
about 3-4 minutes on a 2-core host, most of it TensorFlow starting up.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tfllm.data.corpus import bundled_paths

REPO = Path(__file__).resolve().parents[1]
CORPUS_BYTES = 60_000  # as tests/conftest.py
CASES = ("single_sigterm", "single_kill9", "multi_worker", "parameter_server")


def tiny_args(corpus: str, workdir: Path, steps: int, every: int, strategy: str) -> list[str]:
    """tfllm-train arguments for a seconds-per-hundred-steps run (the tests' overrides)."""
    return [
        "--config=configs/gpt_tiny.py",
        f"--workdir={workdir}",
        f"--config.data.train_path={corpus}",
        "--config.data.format=text",
        "--config.tokenizer.vocab_size=400",
        "--config.model.max_length=32",
        "--config.model.num_layers=2",
        "--config.model.num_heads=2",
        "--config.model.hidden_dim=32",
        "--config.model.intermediate_dim=64",
        "--config.model.dropout=0.0",
        f"--config.train.num_steps={steps}",
        "--config.train.batch_size=8",
        "--config.train.warmup_steps=5",
        "--config.train.steps_per_loop=10",
        f"--config.train.eval_every={every}",
        f"--config.train.checkpoint_every={every}",
        "--config.train.eval_batches=2",
        "--config.train.sample_tokens=0",
        f"--config.runtime.strategy={strategy}",
    ]


def command(case: str, args: list[str], stop_timeout: float) -> list[str]:
    train = [sys.executable, "-m", "tfllm.cli.train", *args]
    launch = [sys.executable, "-m", "tfllm.launch", f"--stop_timeout={stop_timeout:g}"]
    if case == "multi_worker":
        return [*launch, "--workers=2", "--", *train]
    if case == "parameter_server":
        return [*launch, "--workers=2", "--ps=1", "--", *train]
    return train


STRATEGY = {
    "single_sigterm": "default",
    "single_kill9": "default",
    "multi_worker": "multi_worker",
    "parameter_server": "parameter_server",
}
CHIEF_PREFIX = {"multi_worker": "[worker 0] ", "parameter_server": "[chief 0] "}


class Run:
    """A command whose output lines are watched as they come."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log.open("w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            argv,
            cwd=str(REPO),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # the drill's signals reach only what it means
        )
        self.lines: list[str] = []
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                self._lock.notify_all()

    def wait_for(self, predicate, timeout: float) -> None:
        deadline = time.time() + timeout
        with self._lock:
            while not predicate():
                if self.proc.poll() is not None or time.time() > deadline:
                    tail = "\n".join(self.lines[-30:])
                    raise RuntimeError(f"gave up waiting (status {self.proc.poll()}):\n{tail}")
                self._lock.wait(timeout=0.5)

    def find(self, pattern: str) -> re.Match | None:
        regex = re.compile(pattern)
        with self._lock:
            for line in self.lines:
                if match := regex.search(line):
                    return match
        return None

    def last_step(self, prefix: str) -> int:
        """The last `step N/M` progress line of the chief (0 before the first)."""
        regex = re.compile(re.escape(prefix) + r"step (\d+)/")
        with self._lock:
            steps = [int(m.group(1)) for x in self.lines if (m := regex.match(x))]
        return steps[-1] if steps else 0

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._reader.join(timeout=5)
        self.log.close()
        return 128 - code if code < 0 else code


def checkpoint_step(workdir: Path) -> int | None:
    """The step of the checkpoint `checkpoints/checkpoint` names (what a resume reads)."""
    index = workdir / "checkpoints" / "checkpoint"
    try:
        text = index.read_text()
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path: ".*?ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else None


def drill(case: str, corpus: str, root: Path, every: int, stop_timeout: float) -> dict:
    workdir = root / case
    prefix = CHIEF_PREFIX.get(case, "")
    sig = signal.SIGKILL if case == "single_kill9" else signal.SIGTERM
    args = tiny_args(corpus, workdir, 100_000, every, STRATEGY[case])
    started = time.time()
    run = Run(command(case, args, stop_timeout), root / f"{case}.log")
    # Mid-training: past the first periodic checkpoint and one more inner loop.
    run.wait_for(lambda: (checkpoint_step(workdir) or 0) >= every, timeout=240)
    run.wait_for(lambda: run.last_step(prefix) >= every + 10, timeout=120)
    step_at_signal = run.last_step(prefix)
    t0 = time.time()
    os.kill(run.proc.pid, sig)  # the process, or the launcher (which signals its tasks)
    code = run.finish(timeout=stop_timeout + 60)
    exit_seconds = time.time() - t0
    interrupted = run.find(r"interrupted at step (\d+)")
    last_checkpoint = checkpoint_step(workdir)

    # The same command, to a near end: it must resume and finish.
    end = (last_checkpoint or 0) + 10
    rerun = Run(
        command(case, tiny_args(corpus, workdir, end, every, STRATEGY[case]), stop_timeout),
        root / f"{case}.rerun.log",
    )
    rerun_code = rerun.finish(timeout=300)
    resumed = rerun.find(re.escape(prefix) + r"Resuming from step (\d+)")
    resumed_from = int(resumed.group(1)) if resumed else 0
    result = {
        "case": case,
        "signal": "SIGKILL" if sig == signal.SIGKILL else "SIGTERM",
        "signalled": "tfllm-launch" if prefix else "tfllm-train",
        "step_at_signal": step_at_signal,
        "exit_seconds": round(exit_seconds, 2),
        "exit_code": code,
        "saved_step": int(interrupted.group(1)) if interrupted else None,
        "last_checkpoint_step": last_checkpoint,
        "resumed_from": resumed_from if resumed else None,
        "steps_lost": max(0, step_at_signal - resumed_from),
        "rerun_exit_code": rerun_code,
        "rerun_resumes": bool(resumed) and rerun_code == 0,
        "case_seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict]) -> str:
    rows = [
        "| case | signal to | signal → exit (s) | exit code | step at signal | "
        "last checkpoint | resumed from | steps lost | re-run resumes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['case']} | {r['signal']} to {r['signalled']} | {r['exit_seconds']:.1f} | "
            f"{r['exit_code']} | {r['step_at_signal']} | {r['last_checkpoint_step']} | "
            f"{r['resumed_from']} | {r['steps_lost']} | "
            f"{'yes' if r['rerun_resumes'] else 'NO'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--out", default="docs/measurements/kill_drill.json")
    parser.add_argument("--checkpoint_every", type=int, default=50)
    parser.add_argument("--stop_timeout", type=float, default=60.0, help="tfllm-launch's")
    parser.add_argument("--keep", action="store_true", help="keep the workdirs and logs")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")

    root = Path(tempfile.mkdtemp(prefix="kill_drill_"))
    corpus = root / "corpus.txt"
    with gzip.open(bundled_paths("shakespeare")["train"], "rt", encoding="utf-8") as f:
        corpus.write_text(f.read(CORPUS_BYTES), encoding="utf-8")
    started = time.time()
    results = []
    try:
        for case in cases:
            results.append(drill(case, str(corpus), root, args.checkpoint_every, args.stop_timeout))
    finally:
        if args.keep:
            print(f"workdirs and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        "command": "python scripts/kill_drill.py " + " ".join(argv or sys.argv[1:]),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": "configs/gpt_tiny.py, tiny overrides (tests/conftest.py), "
        f"checkpoint_every={args.checkpoint_every}, steps_per_loop=10",
        "seconds": round(time.time() - started, 1),
        "cases": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    ok = all(r["rerun_resumes"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
