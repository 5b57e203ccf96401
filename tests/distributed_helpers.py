"""Running distributed checks in subprocesses: check scripts and local clusters.

Logical CPUs can be configured only once per process, before TensorFlow picks
its devices, and a cluster task reads its own TF_CONFIG; so the distributed
tests start processes of their own:

- `run_check_script(script, *args)`: a script next to its test (it sets up its
  logical CPUs, runs every comparison in one TensorFlow start) that prints one
  `RESULT {json}` line; returns the parsed JSON;
- `launch_command(workers, ps, command)`: `python -m tfllm.launch` around a
  command, which starts one process per task with its TF_CONFIG (on free
  localhost ports: `tfllm.launch.cluster_spec`) and prefixes their output;
- `run_command(argv)`: a command run to its end, output captured;
- `Cluster`: a launched cluster whose output a test watches line by line
  (to signal one task mid-run, or wait for a message).

conftest.py imports these, so a test writes `from conftest import run_check_script`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "


def subprocess_env() -> dict[str, str]:
    """This process's environment (read at each start) with TensorFlow's C++ logging
    quiet and Python's output unbuffered."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def run_command(argv: Sequence[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """`argv` run from the repository root to its end, text output captured."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env=subprocess_env(),
    )


def run_check_script(script: str | Path, *args: str, timeout: int = 600) -> dict:
    """`python script args...`: asserts it succeeded and returns its `RESULT` line's JSON.

    A failure shows the script's last 3000 characters of stderr.
    """
    proc = run_command([sys.executable, str(script), *args], timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)][-1]
    return json.loads(line.removeprefix(RESULT_PREFIX))


def launch_command(workers: int, ps: int, command: Sequence[str]) -> list[str]:
    """`python -m tfllm.launch --workers=N [--ps=M] -- command...`."""
    argv = [sys.executable, "-m", "tfllm.launch", f"--workers={workers}"]
    if ps:
        argv.append(f"--ps={ps}")
    return [*argv, "--", *command]


def python_module(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class Cluster:
    """`tfllm-launch --workers=N [--ps=M] -- command` with its output watched line by line."""

    def __init__(
        self, workers: int, ps: int, command: Sequence[str], timeout: float = 300
    ) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            launch_command(workers, ps, command),
            cwd=str(REPO),
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()

    def wait_for(self, pattern: str) -> re.Match:
        """The first output line matching `pattern` (waits for it)."""
        regex = re.compile(pattern)
        deadline = time.time() + self.timeout
        seen = 0
        with self._new_line:
            while time.time() < deadline:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if self.proc.poll() is not None and seen == len(self.lines):
                    break
                self._new_line.wait(timeout=1)
        raise AssertionError(f"no line matching {pattern!r}:\n" + self.output()[-3000:])

    def signal(self, task: str, sig: int) -> None:
        """Sends `sig` to the task the launcher reported as `[launch] <task>: pid N`."""
        pid = int(self.wait_for(rf"\[launch\] {task}: pid (\d+)").group(1))
        os.kill(pid, sig)

    def wait(self) -> int:
        code = self.proc.wait(timeout=self.timeout)
        time.sleep(0.2)  # let the reader drain the pipe
        return code

    def output(self) -> str:
        return "\n".join(self.lines)
