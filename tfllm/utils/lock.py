"""One writer per workdir.

Two `tfllm-train` runs on the same workdir would interleave checkpoints and
overwrite each other's metrics, so every command that writes into a workdir
holds `W/.lock` (created with O_EXCL, so only one process can win). A lock
left by a process that died (kill -9, power loss) is recovered automatically
when its pid is gone on this host; a lock held from another host can't be
checked and must be removed by hand — the error says how.
"""

from __future__ import annotations

import json
import os
import socket
import time
from types import TracebackType

from absl import logging

from tfllm.errors import WorkdirError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """Context manager holding `workdir/<name>` for the duration of a command."""

    def __init__(self, workdir: str, command: str, name: str = ".lock") -> None:
        self.path = os.path.join(workdir, name)
        self.workdir = workdir
        self.command = command
        self._held = False

    def _payload(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        ).encode()

    def _read_owner(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _is_stale(self, owner: dict | None) -> bool:
        if owner is None:  # torn or unreadable: its writer died mid-write
            return True
        if owner.get("host") != socket.gethostname():
            return False
        return not _pid_alive(int(owner.get("pid", -1)))

    def __enter__(self) -> WorkdirLock:
        os.makedirs(self.workdir, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if not self._is_stale(owner):
                    raise WorkdirError(
                        f"--workdir: {self.workdir} is in use by {owner.get('command')} "
                        f"(pid {owner.get('pid')} on {owner.get('host')}, since "
                        f"{owner.get('started')}); wait for it to finish, or delete "
                        f"{self.path} if that process is gone"
                    ) from None
                logging.warning("Removing stale lock %s left by %s", self.path, owner)
                os.unlink(self.path)
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(self._payload())
            self._held = True
            return self
        raise WorkdirError(f"--workdir: could not take {self.path} (another process raced us)")

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._held:
            owner = self._read_owner()
            if owner and owner.get("pid") == os.getpid():
                os.unlink(self.path)
            self._held = False
