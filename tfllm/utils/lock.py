"""One writer per workdir.

Two `tfllm-train` runs on the same workdir would interleave checkpoints and
overwrite each other's metrics, so every command that writes into a workdir
holds `W/.lock`.

- **Atomic, with its content**: the owner record (pid, host, command, start
  time, a random token) is written and flushed to a temp file first, then
  hard-linked to `W/.lock`; `link` fails if the lock exists, so exactly one
  process wins and nobody ever sees a lock without its owner. (An empty or
  torn lock can only be left by a crash of an older tfllm, and is stale.)
- **A lease**: while held, a daemon thread touches the lock every
  `heartbeat_s` seconds (its mtime is the heartbeat). A lock whose heartbeat
  is older than `lease_s` is stale, whatever host wrote it, so a job
  restarted on another machine (a Kubernetes pod on a new node) takes over
  with one warning line instead of waiting for a hand deletion. On the same
  host a lock whose pid is gone is stale at once, as before.
- **Taking over** a stale lock is itself serialised by `W/.lock.break`
  (created the same way), and the lock is re-read under it, so two processes
  that both found the same stale lock cannot both remove a lock and both win.

What it does not cover: a holder stopped (SIGSTOP, Ctrl-Z, a frozen VM) for
longer than the lease loses the lock; when it runs again its heartbeat thread
sees another owner and logs a warning. The lease compares the lock's mtime
(set by the file system's clock) with this host's clock, so hosts sharing a
workdir need clocks in sync to well within the lease (NTP does that).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from types import TracebackType

from absl import logging

from tfllm.errors import WorkdirError

HEARTBEAT_S = 10.0  # how often a holder refreshes its lock
LEASE_S = 60.0  # a lock not refreshed for this long is stale, whatever host wrote it
_BREAK_STALE_S = 30.0  # a `.lock.break` older than this was left by a crashed breaker


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _create_with(path: str, payload: bytes) -> bool:
    """Creates `path` holding `payload`, atomically; False if `path` exists.

    The payload goes to a unique temp file (flushed), which is then hard-linked
    to `path`: the link either fails (someone holds it) or makes the whole file
    appear at once.
    """
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: O_EXCL + rename is not
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):  # atomic here
                raise
            raise WorkdirError(
                f"--workdir: cannot lock {path}: the file system has no hard links ({e})"
            ) from None
        return True
    finally:
        os.unlink(tmp)


def _read(path: str) -> bytes | None:
    """The lock's bytes; None when it does not exist (any more)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _parse(data: bytes) -> dict | None:
    try:
        owner = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


class WorkdirLock:
    """Context manager holding `workdir/<name>` for the duration of a command."""

    def __init__(
        self,
        workdir: str,
        command: str,
        name: str = ".lock",
        *,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.path = os.path.join(workdir, name)
        self.workdir = workdir
        self.command = command
        self.heartbeat_s = float(heartbeat_s)
        self.lease_s = float(lease_s)
        self._token = ""
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "token": self._token,
                "lease_s": self.lease_s,
            }
        ).encode()

    def _stale_reason(self, owner: dict | None, age: float) -> str | None:
        """Why the lock with `owner`, last refreshed `age` seconds ago, is stale; None if live."""
        if owner is None:
            return "it is empty or torn (left by a crash while it was written)"
        lease = max(self.lease_s, float(owner.get("lease_s") or 0.0))
        if age > lease:
            return f"no heartbeat for {age:.0f} s (lease {lease:.0f} s)"
        if owner.get("host") == socket.gethostname():
            try:
                pid = int(owner.get("pid", -1))
            except (TypeError, ValueError):
                pid = -1
            if not _pid_alive(pid):
                return f"process {pid} is gone"
        return None

    def _look(self) -> tuple[bytes, dict | None, float] | None:
        """(bytes, owner, heartbeat age) of the current lock; None if there is none."""
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        data = _read(self.path)
        if data is None:
            return None
        return data, _parse(data), time.time() - mtime

    def _break(self, seen: bytes, why: str) -> None:
        """Removes the lock if it still holds `seen`, one breaker at a time."""
        breaker = self.path + ".break"
        if not _create_with(breaker, self._payload()):
            try:  # a breaker that crashed mid-break leaves this behind
                if time.time() - os.stat(breaker).st_mtime > _BREAK_STALE_S:
                    os.unlink(breaker)
            except FileNotFoundError:
                pass
            time.sleep(0.01)
            return  # let the caller look again
        try:
            if _read(self.path) == seen:  # nobody replaced it meanwhile
                owner = _parse(seen) or {}
                logging.warning(
                    "Taking over the lock %s of %s (pid %s on %s, since %s): %s",
                    self.path,
                    owner.get("command", "?"),
                    owner.get("pid", "?"),
                    owner.get("host", "?"),
                    owner.get("started", "?"),
                    why,
                )
                os.unlink(self.path)
        finally:
            os.unlink(breaker)

    def __enter__(self) -> WorkdirLock:
        os.makedirs(self.workdir, exist_ok=True)
        self._token = uuid.uuid4().hex
        payload = self._payload()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if _create_with(self.path, payload):
                self._held = True
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._heartbeat, name=f"lock heartbeat {self.path}", daemon=True
                )
                self._thread.start()
                return self
            seen = self._look()
            if seen is None:  # released between our link and our look: try again
                continue
            data, owner, age = seen
            why = self._stale_reason(owner, age)
            if why is None:
                raise WorkdirError(
                    f"--workdir: {self.workdir} is in use by {owner.get('command')} "
                    f"(pid {owner.get('pid')} on {owner.get('host')}, since "
                    f"{owner.get('started')}); wait for it to finish, or delete "
                    f"{self.path} if that process is gone"
                )
            self._break(data, why)
        raise WorkdirError(f"--workdir: could not take {self.path} (other processes keep racing)")

    def _owned(self) -> bool:
        data = _read(self.path)
        owner = _parse(data) if data is not None else None
        return bool(owner) and owner.get("token") == self._token

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._owned():
                    logging.warning(
                        "Lost the lock %s: another process took it over (this one was "
                        "not heard from for longer than the %.0f s lease)",
                        self.path,
                        self.lease_s,
                    )
                    return
                os.utime(self.path)
            except OSError as e:  # a passing file-system hiccup: the lease allows a few
                logging.warning("Could not refresh the lock %s: %s", self.path, e)

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._held = False
        if self._owned():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
