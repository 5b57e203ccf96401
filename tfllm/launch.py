"""tfllm-launch: run one command as a local TensorFlow cluster.

  tfllm-launch --workers=2 -- tfllm-train --config=configs/gpt_tiny.py \
      --workdir=runs/mw --config.runtime.strategy=multi_worker
  tfllm-launch --workers=2 --ps=1 -- tfllm-train --config=configs/gpt_tiny.py \
      --workdir=runs/ps --config.runtime.strategy=parameter_server

Every process gets the same command and its own `TF_CONFIG` (free localhost
ports), exactly as a cluster manager (Kubernetes, Slurm, Vertex AI) would set
it, so what runs here runs on real hosts unchanged. Log lines are prefixed
with the task (`[worker 1]`).

When the cluster ends:
- synchronous jobs (no `--ps`): all tasks must finish; the first task that
  fails stops the others and its exit status is the launcher's;
- parameter-server jobs (`--ps=M`, which adds the chief): the chief is the job.
  Workers and parameter servers serve until the chief exits, then are
  stopped; the launcher exits with the chief's status. A worker that dies is
  reported and left dead (the chief's ClusterCoordinator reschedules its work);
  `--restart_workers` starts it again, as a cluster manager would.

Why not `tf.distribute` multi-process test utilities: they are test-only
internals that run functions, not commands, and do not prefix logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

STOP_GRACE_SECONDS = 10.0  # SIGTERM first (checkpoint on the way out), then SIGKILL


@dataclass
class Task:
    """One process of the cluster."""

    type: str
    index: int
    process: subprocess.Popen | None = None
    restarts: int = 0
    reported: bool = False  # its exit has been handled
    pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.type} {self.index}"


def free_ports(n: int) -> list[int]:
    """`n` distinct free localhost ports (bound together, so none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(workers: int, ps: int, chief: bool) -> dict[str, list[str]]:
    """The `cluster` part of TF_CONFIG on localhost."""
    names = (["chief"] if chief else []) + ["worker"] * workers + ["ps"] * ps
    ports = iter(free_ports(len(names)))
    cluster: dict[str, list[str]] = {}
    for name in names:
        cluster.setdefault(name, []).append(f"localhost:{next(ports)}")
    return cluster


def tf_config(cluster: dict[str, list[str]], task: Task) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task.type, "index": task.index}})


class Launcher:
    """Starts, watches and stops the processes of one local cluster."""

    def __init__(
        self,
        command: list[str],
        workers: int,
        ps: int = 0,
        restart_workers: bool = False,
        out=None,
    ) -> None:
        self.command = command
        self.ps_mode = ps > 0
        self.cluster = cluster_spec(workers, ps, chief=self.ps_mode)
        self.tasks = [Task(t, i) for t, addrs in self.cluster.items() for i in range(len(addrs))]
        self.restart_workers = restart_workers
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self._stopping = False

    # ----------------------------------------------------------- processes
    def _start(self, task: Task) -> None:
        env = dict(os.environ, TF_CONFIG=tf_config(self.cluster, task), PYTHONUNBUFFERED="1")
        task.process = subprocess.Popen(
            self.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # our Ctrl-C is forwarded, not broadcast
        )
        task.pump = threading.Thread(target=self._pump, args=(task,), daemon=True)
        task.pump.start()
        self._say(f"[launch] {task.label}: pid {task.process.pid}")

    def _pump(self, task: Task) -> None:
        prefix = f"[{task.label}] "
        for line in task.process.stdout:
            self._say(prefix + line.rstrip("\n"))

    def _say(self, line: str) -> None:
        with self._print_lock:
            print(line, file=self.out, flush=True)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM every live task, SIGKILL what is left after the grace period."""
        self._stopping = True
        live = [t for t in self.tasks if t.process and t.process.poll() is None]
        for task in live:
            _signal(task.process, sig)
        deadline = time.time() + STOP_GRACE_SECONDS
        for task in live:
            try:
                task.process.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal(task.process, signal.SIGKILL)
                task.process.wait()

    # ------------------------------------------------------------- the run
    def run(self) -> int:
        self._say(f"[launch] cluster: {json.dumps(self.cluster)}")
        for task in self.tasks:
            self._start(task)
        previous = {
            sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            status = self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop_all()
            for task in self.tasks:
                if task.pump is not None:
                    task.pump.join(timeout=5)
        return status

    def _forward(self, signum, frame) -> None:  # noqa: ARG002
        self._say(f"[launch] signal {signum}: stopping the cluster")
        for task in self.tasks:
            if task.process and task.process.poll() is None:
                _signal(task.process, signum)

    def _watch(self) -> int:
        """Polls the tasks until the job's outcome is known; returns its status."""
        while True:
            for task in self.tasks:
                code = task.process.poll()
                if code is None:
                    continue
                outcome = self._on_exit(task, code)
                if outcome is not None:
                    return outcome
            time.sleep(0.2)

    def _on_exit(self, task: Task, code: int) -> int | None:
        """What one finished task means for the job (None: carry on)."""
        if task.reported:
            return None
        task.reported = True
        status = _exit_status(code)
        if self.ps_mode:
            if task.type == "chief":
                self._say(f"[launch] chief exited with status {status}; stopping the cluster")
                return status
            if task.type == "worker" and not self._stopping:
                if self.restart_workers:
                    task.restarts += 1
                    self._say(f"[launch] {task.label} exited ({status}); restarting it")
                    task.reported = False
                    self._start(task)
                else:
                    self._say(
                        f"[launch] {task.label} exited ({status}); the chief's coordinator "
                        "carries on with the other workers"
                    )
                return None
            self._say(f"[launch] {task.label} exited ({status}); waiting for the chief")
            return None
        if code != 0:
            self._say(f"[launch] {task.label} failed with status {status}; stopping the others")
            return status
        if all(t.process.poll() == 0 for t in self.tasks):
            return 0
        return None


def _signal(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)  # the task and anything it started


def _exit_status(code: int) -> int:
    """Popen's -N (killed by signal N) as the shell's 128 + N."""
    return 128 - code if code < 0 else code


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tfllm-launch",
        description="Run a command as a local TensorFlow cluster (one TF_CONFIG per process).",
        epilog="Example: tfllm-launch --workers=2 -- tfllm-train --config=configs/gpt_tiny.py "
        "--workdir=runs/mw --config.runtime.strategy=multi_worker",
    )
    parser.add_argument("--workers", type=int, required=True, help="number of worker processes")
    parser.add_argument(
        "--ps",
        type=int,
        default=0,
        help="number of parameter servers; >0 adds a chief (strategy parameter_server)",
    )
    parser.add_argument(
        "--restart_workers",
        action="store_true",
        help="parameter-server jobs: restart a worker that dies, as a cluster manager would",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given (put it after --)")
    if args.workers < 1:
        parser.error(f"--workers: {args.workers} must be at least 1")
    if args.ps < 0:
        parser.error(f"--ps: {args.ps} must not be negative")
    if args.restart_workers and not args.ps:
        parser.error("--restart_workers: only meaningful with --ps (parameter-server jobs)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    launcher = Launcher(args.command, args.workers, args.ps, args.restart_workers)
    try:
        return launcher.run()
    except FileNotFoundError as e:
        print(f"tfllm-launch: error: cannot run {args.command[0]!r}: {e.strerror}", file=sys.stderr)
        return 2


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
