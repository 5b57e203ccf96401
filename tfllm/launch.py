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
  reported and left dead (the chief's ClusterCoordinator reschedules its work;
  when the last worker is gone, nothing can run, so the job is stopped as on
  SIGTERM with the worker's status);
  `--restart_workers` starts it again, as a cluster manager would, at most
  `--max_restarts` times with a doubling pause (1 s, 2 s, 4 s, ...); then the
  launcher gives up, says why in one line, stops the job as on SIGTERM and
  exits with the worker's last status. A worker up `HEALTHY_SECONDS` before
  it died starts its count afresh (Kubernetes' back-off reset).

Stopping (SIGTERM or Ctrl-C to the launcher; docs/distributed.md): the first
signal asks each task once to save and stop: all tasks of a synchronous job,
only the chief of a parameter-server job (its save needs the workers and ps,
stopped after it). A task's exit never makes the launcher signal the others
again: to `tfllm-train` a second SIGTERM means "stop now" and cuts off the
save. A task still running `--stop_timeout` s after it was asked is told to
stop now (a second SIGTERM), then killed 5 s later; a second signal to the
launcher does that at once (in a ps job, to the chief), a third kills.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tfllm.utils.local_cluster import cluster_spec, tf_config

STOP_TIMEOUT_SECONDS = 120.0  # to save and exit once asked (default of --stop_timeout)
PEER_FAILED_SECONDS = 10.0  # a synchronous job's tasks after a peer failed: they cannot save
STOP_NOW_SECONDS = 5.0  # after "stop now" (the second SIGTERM), before SIGKILL
SERVER_STOP_SECONDS = 10.0  # parameter-server workers and ps after the chief exited
MAX_RESTARTS = 3  # default of --max_restarts
RESTART_BACKOFF_SECONDS = 1.0  # first pause before a restart; doubles each time
HEALTHY_SECONDS = 600.0  # a worker up this long before it died gets a fresh restart count

RUNNING, ASKED, STOP_NOW, KILLED = range(4)  # how far a task has been asked to stop


@dataclass
class Task:
    """One process of the cluster."""

    type: str
    index: int
    process: subprocess.Popen | None = None
    restarts: int = 0
    reported: bool = False  # its exit has been handled
    restart_at: float | None = None  # when a pending restart is due
    started_at: float = 0.0  # when its current process started
    stop_level: int = RUNNING  # RUNNING, ASKED, STOP_NOW or KILLED
    stop_deadline: float | None = None  # when to escalate if it is still alive
    pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.type} {self.index}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Launcher:
    """Starts, watches and stops the processes of one local cluster."""

    def __init__(
        self,
        command: list[str],
        workers: int,
        ps: int = 0,
        restart_workers: bool = False,
        out=None,
        max_restarts: int = MAX_RESTARTS,
        restart_backoff: float = RESTART_BACKOFF_SECONDS,
        healthy_seconds: float = HEALTHY_SECONDS,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.command = command
        self.ps_mode = ps > 0
        self.cluster = cluster_spec(workers, ps, chief=self.ps_mode)
        self.tasks = [Task(t, i) for t, addrs in self.cluster.items() for i in range(len(addrs))]
        self.restart_workers = restart_workers
        self.max_restarts = max_restarts
        self.restart_backoff = restart_backoff
        self.healthy_seconds = healthy_seconds
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self._stopping = False  # the job is being stopped: no restarts
        self._status: int | None = None  # the job's outcome, once known
        self._user_signals: list[int] = []  # received, not yet acted on
        self._user_signal_count = 0

    # ----------------------------------------------------------- processes
    def _start(self, task: Task) -> None:
        config = tf_config(self.cluster, task.type, task.index)
        env = dict(os.environ, TF_CONFIG=config, PYTHONUNBUFFERED="1")
        task.process = subprocess.Popen(
            self.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # our Ctrl-C is forwarded, not broadcast
        )
        task.reported = False
        task.restart_at = None
        task.started_at = time.time()
        task.pump = threading.Thread(target=self._pump, args=(task, task.process), daemon=True)
        task.pump.start()
        self._say(f"[launch] {task.label}: pid {task.process.pid}")

    def _pump(self, task: Task, process: subprocess.Popen) -> None:
        prefix = f"[{task.label}] "
        for line in process.stdout:
            self._say(prefix + line.rstrip("\n"))

    def _say(self, line: str) -> None:
        with self._print_lock:
            print(line, file=self.out, flush=True)

    def _ask(self, task: Task, timeout: float) -> None:
        """Asks a live task to save and stop (its first SIGTERM), once."""
        if task.alive() and task.stop_level == RUNNING:
            task.stop_level = ASKED
            task.stop_deadline = time.time() + timeout
            _signal(task.process, signal.SIGTERM)

    def _escalate(self, task: Task) -> None:
        """One step up the ladder: ask, then stop now (second SIGTERM), then SIGKILL."""
        if not task.alive():
            return
        if task.stop_level == RUNNING:
            self._ask(task, self.stop_timeout)
        elif task.stop_level == ASKED:
            task.stop_level = STOP_NOW
            task.stop_deadline = time.time() + STOP_NOW_SECONDS
            _signal(task.process, signal.SIGTERM)
        else:
            task.stop_level = KILLED
            task.stop_deadline = None
            _signal(task.process, signal.SIGKILL)

    def stop_all(self, timeout: float = SERVER_STOP_SECONDS) -> None:
        """Asks every live task to stop, escalates after `timeout`, returns when all are gone."""
        self._stopping = True
        for task in self.tasks:
            self._ask(task, timeout)
        while any(t.alive() for t in self.tasks):
            self._take_user_signals()
            self._escalate_overdue()
            time.sleep(0.1)

    # ------------------------------------------------------------- the run
    def run(self) -> int:
        self._say(f"[launch] cluster: {json.dumps(self.cluster)}")
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for task in self.tasks:
                self._start(task)
            status = self._watch()
            self.stop_all()  # what is left: ps-job servers; in sync jobs, nothing
        finally:
            # An error in here (e.g. the command cannot be run): no task outlives us.
            for task in self.tasks:
                if task.alive():
                    _signal(task.process, signal.SIGKILL)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for task in self.tasks:
                if task.pump is not None:
                    task.pump.join(timeout=5)
        return status

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._user_signals.append(signum)  # acted on by the watch loop, not in the handler

    def _take_user_signals(self) -> None:
        """Acts on signals sent to the launcher: ask to stop, then stop now, then kill."""
        while self._user_signals:
            signum = self._user_signals.pop(0)
            self._user_signal_count += 1
            live = [t for t in self.tasks if t.alive()]
            if self._user_signal_count == 1:
                self._stopping = True
                if self.ps_mode and any(t.type == "chief" for t in live):
                    self._say(
                        f"[launch] signal {signum}: asking the chief to save and stop "
                        "(workers and ps are stopped after it)"
                    )
                    live = [t for t in live if t.type == "chief"]
                else:
                    self._say(f"[launch] signal {signum}: asking every task to save and stop")
                for task in live:
                    self._ask(task, self.stop_timeout)
                continue
            target = STOP_NOW if self._user_signal_count == 2 else KILLED
            action = "stopping now" if target == STOP_NOW else "killing"
            if target == STOP_NOW and self.ps_mode and any(t.type == "chief" for t in live):
                live = [t for t in live if t.type == "chief"]  # the servers still after it
                action = "telling the chief to stop now"
            self._say(f"[launch] signal {signum} again: {action}")
            for task in live:
                while task.alive() and task.stop_level < target:
                    self._escalate(task)

    def _escalate_overdue(self) -> None:
        now = time.time()
        for task in self.tasks:
            if task.alive() and task.stop_deadline is not None and now >= task.stop_deadline:
                if task.stop_level == ASKED:
                    self._say(
                        f"[launch] {task.label} has not stopped in time; telling it to stop now"
                    )
                elif task.stop_level == STOP_NOW:
                    self._say(f"[launch] {task.label} is still running; killing it")
                self._escalate(task)

    def _watch(self) -> int:
        """Polls the tasks until the job's outcome is known and its tasks are gone
        (those of a parameter-server job: its chief); returns the job's status."""
        while True:
            self._take_user_signals()
            for task in self.tasks:
                code = None if task.process is None else task.process.poll()
                if code is not None and not task.reported:
                    task.reported = True
                    self._on_exit(task, code)
            self._restart_due()
            self._escalate_overdue()
            if self._status is not None and self._job_over():
                return self._status
            time.sleep(0.2)

    def _job_over(self) -> bool:
        if self.ps_mode:
            return not any(t.alive() for t in self.tasks if t.type == "chief")
        return not any(t.alive() for t in self.tasks)

    def _finish(self, status: int) -> None:
        if self._status is None:
            self._status = status

    def _on_exit(self, task: Task, code: int) -> None:
        """What one finished task means for the job."""
        status = _exit_status(code)
        if self.ps_mode:
            if task.type == "chief":
                self._say(f"[launch] chief exited with status {status}; stopping the cluster")
                self._finish(status)
                self._stopping = True
            elif task.type == "worker" and not self._stopping:
                self._on_worker_exit(task, status)
            else:
                self._say(f"[launch] {task.label} exited ({status}); waiting for the chief")
            return
        if code == 0:
            if all(t.process.poll() == 0 for t in self.tasks):
                self._finish(0)
            return
        self._finish(status)
        if self._stopping or status == 130:
            # It stopped as asked, or after a stop its peers agreed on (tfllm-train's
            # vote): they are saving the same step. Asked already or not, they are
            # not signalled again now (a second SIGTERM would cut off the save),
            # only once `--stop_timeout` has passed.
            self._say(f"[launch] {task.label} stopped with status {status}; waiting for the others")
            self._stopping = True
            for other in self.tasks:
                if other.alive() and other.stop_level == RUNNING:
                    other.stop_level = ASKED
                    other.stop_deadline = time.time() + self.stop_timeout
            return
        self._say(f"[launch] {task.label} failed with status {status}; stopping the others")
        self._stopping = True
        for other in self.tasks:
            self._ask(other, PEER_FAILED_SECONDS)  # they cannot save: a save needs every worker

    def _on_worker_exit(self, task: Task, status: int) -> None:
        """A parameter-server worker died: leave it, restart it (bounded), or give up."""
        if not self.restart_workers:
            if any(t.alive() for t in self.tasks if t.type == "worker"):
                self._say(
                    f"[launch] {task.label} exited ({status}); the chief's coordinator "
                    "carries on with the other workers"
                )
                return
            # The coordinator would wait for a worker forever: stop the job instead.
            self._say(
                f"[launch] {task.label} exited ({status}) and it was the last worker "
                "(--restart_workers is off): no step can run; stopping the job"
            )
            self._stop_job_for(status)
            return
        if task.restarts and time.time() - task.started_at >= self.healthy_seconds:
            self._say(
                f"[launch] {task.label} had run {time.time() - task.started_at:.0f} s before it "
                f"exited: its restart count starts again"
            )
            task.restarts = 0
        if task.restarts >= self.max_restarts:
            self._say(
                f"[launch] giving up on {task.label}: it exited with status {status} after "
                f"{task.restarts} restart{'s' if task.restarts != 1 else ''} "
                f"(--max_restarts={self.max_restarts}); stopping the job"
            )
            self._stop_job_for(status)
            return
        delay = self.restart_backoff * 2**task.restarts
        task.restarts += 1
        task.restart_at = time.time() + delay
        self._say(
            f"[launch] {task.label} exited ({status}); restarting it in {delay:g} s "
            f"(restart {task.restarts} of {self.max_restarts})"
        )

    def _stop_job_for(self, status: int) -> None:
        """Ends a job a worker failure doomed, as SIGTERM would (the chief saves:
        its variables live on the ps tasks); the job's status is the worker's."""
        self._finish(status or 1)
        self._stopping = True
        for chief in self.tasks:
            if chief.type == "chief":
                self._ask(chief, self.stop_timeout)

    def _restart_due(self) -> None:
        now = time.time()
        for task in self.tasks:
            if task.restart_at is not None and now >= task.restart_at:
                task.restart_at = None
                if not self._stopping:
                    self._start(task)


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
    parser.add_argument(
        "--max_restarts",
        type=int,
        default=None,
        help=f"with --restart_workers: restarts per worker before the launcher gives up and "
        f"stops the job (default {MAX_RESTARTS}; pauses of {RESTART_BACKOFF_SECONDS:g} s, "
        "doubling, between them)",
    )
    parser.add_argument(
        "--stop_timeout",
        type=float,
        default=STOP_TIMEOUT_SECONDS,
        help="seconds a task has to save and exit once asked to stop (SIGTERM); then it is "
        f"told to stop now (a second SIGTERM) and killed {STOP_NOW_SECONDS:g} s later "
        f"(default {STOP_TIMEOUT_SECONDS:g})",
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
    if args.max_restarts is not None and not args.restart_workers:
        parser.error("--max_restarts: only meaningful with --restart_workers")
    if args.max_restarts is not None and args.max_restarts < 0:
        parser.error(f"--max_restarts: {args.max_restarts} must not be negative")
    if not args.stop_timeout > 0:  # also rejects nan
        parser.error(f"--stop_timeout: {args.stop_timeout} must be a positive number of seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    launcher = Launcher(
        args.command,
        args.workers,
        args.ps,
        args.restart_workers,
        max_restarts=MAX_RESTARTS if args.max_restarts is None else args.max_restarts,
        stop_timeout=args.stop_timeout,
    )
    try:
        return launcher.run()
    except FileNotFoundError as e:
        print(f"tfllm-launch: error: cannot run {args.command[0]!r}: {e.strerror}", file=sys.stderr)
        return 2


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
