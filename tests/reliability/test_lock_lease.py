"""The workdir lock (issue 24, item 4): a lease that another host can take
over once its heartbeat stops, and a lock created atomically with its content,
so two processes never both hold it."""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

from tfllm.errors import WorkdirError
from tfllm.utils.lock import WorkdirLock


def _foreign_lock(path, age_s: float) -> None:
    """A lock written by a process on another machine, last refreshed `age_s` ago."""
    path.write_text(json.dumps({
        "pid": 1, "host": "node-that-went-away", "command": "tfllm-train",
        "started": "2025-01-01 00:00:00"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_another_hosts_lock_with_an_old_heartbeat_is_taken_over(tmp_path, caplog):
    _foreign_lock(tmp_path / ".lock", age_s=3600)
    with caplog.at_level(logging.WARNING), WorkdirLock(str(tmp_path), "tfllm-train"):
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    said = [r.getMessage() for r in caplog.records if "Taking over the lock" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "node-that-went-away" in said[0] and "no heartbeat for" in said[0], said[0]
    assert not (tmp_path / ".lock").exists()


def test_another_hosts_lock_with_a_fresh_heartbeat_is_refused(tmp_path):
    _foreign_lock(tmp_path / ".lock", age_s=5)
    with pytest.raises(WorkdirError, match=r"is in use by tfllm-train \(pid 1 on node-that-went"):
        with WorkdirLock(str(tmp_path), "tfllm-train"):
            pass
    assert json.loads((tmp_path / ".lock").read_text())["host"] == "node-that-went-away"


def test_a_live_holder_keeps_its_lease_by_heartbeat(tmp_path):
    """A holder past its lease is still live while its heartbeat runs."""
    with WorkdirLock(str(tmp_path), "holder", heartbeat_s=0.05, lease_s=0.5):
        lock = tmp_path / ".lock"
        old = time.time() - 3600
        os.utime(lock, (old, old))
        time.sleep(0.4)
        assert time.time() - lock.stat().st_mtime < 0.3  # refreshed
        deadline = time.time() + 1.5  # three leases
        while time.time() < deadline:
            with pytest.raises(WorkdirError, match="is in use by holder"):
                with WorkdirLock(str(tmp_path), "other", lease_s=0.5):
                    pass
            time.sleep(0.1)


def test_an_empty_lock_file_is_taken_over_with_a_warning(tmp_path, caplog):
    """Locks are created with their content, so an empty one can only be what a
    crash (of an older tfllm) left: it is stale, and replaced by a full one."""
    (tmp_path / ".lock").write_bytes(b"")
    with caplog.at_level(logging.WARNING), WorkdirLock(str(tmp_path), "tfllm-train"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert "empty or torn" in caplog.text


RACER = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {repo!r})
    from tfllm.errors import WorkdirError
    from tfllm.utils.lock import WorkdirLock

    workdir, rounds = sys.argv[1], int(sys.argv[2])
    lock, inside = os.path.join(workdir, ".lock"), os.path.join(workdir, "inside")
    held = both = torn = errors = 0
    while held < rounds:
        try:  # a lock anyone can see must already name its owner
            with open(lock, "rb") as f:
                data = f.read()
            json.loads(data)
        except FileNotFoundError:
            pass
        except ValueError:
            torn += 1
        try:
            with WorkdirLock(workdir, "racer"):
                try:
                    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:  # someone else holds the lock too
                    both += 1
                    continue
                os.close(fd)
                time.sleep(0.001)
                os.unlink(inside)
                held += 1
        except WorkdirError:  # held by another racer: try again
            pass
        except OSError:  # a lock that vanished or appeared under our feet
            errors += 1
    print(json.dumps({{"both": both, "torn": torn, "errors": errors}}))
""")


def test_concurrent_takers_never_both_hold_the_lock(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(repo=str(REPO)))
    workdir = tmp_path / "w"
    workdir.mkdir()
    procs = [
        subprocess.Popen([sys.executable, str(script), str(workdir), "150"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r == {"both": 0, "torn": 0, "errors": 0} for r in results), results
    assert not (workdir / ".lock").exists()
    assert not list(workdir.glob(".lock*"))  # no temp or breaker files left
