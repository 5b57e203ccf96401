"""Starting `tfllm-serve` as a child process on a free port, and knowing when it is up.

For tests, benchmarks and notebooks: the server prints one "ready on URL"
line on stderr once its model is loaded and compiled; `Server` waits for it,
so the first request is served warm.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # on PYTHONPATH, for an uninstalled checkout
READY = re.compile(r"ready on (http://[^/]+)/v1/models/(\S+)")


class Server:
    """A `tfllm-serve` subprocess: `url` is its base, `model_url` the served model's,
    `lines` what it printed on stderr. A context manager (stops the server)."""

    def __init__(self, workdir: str, *flags: str, timeout: float = 240) -> None:
        path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfllm.cli.serve", f"--workdir={workdir}", "--port=0", *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self.name = ""
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tfllm-serve did not start:\n" + "".join(self.lines[-30:]))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.url, self.name = match.group(1), match.group(2)
                self._ready.set()

    @property
    def model_url(self) -> str:
        return f"{self.url}/v1/models/{self.name}"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
