"""Starting a real `tfllm-serve` process for a test, on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"ready on (http://[^/]+)/v1/models/(\S+)")


class Server:
    """A `tfllm-serve` subprocess; `url` is its base, `stderr` what it printed."""

    def __init__(self, workdir: str, *flags: str, timeout: float = 240) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfllm.cli.serve", f"--workdir={workdir}", "--port=0", *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=str(REPO),
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
