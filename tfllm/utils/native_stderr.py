"""Keeping native libraries' INFO chatter out of a command's stderr.

Native code (SentencePiece inside tensorflow_text, LiteRT's delegates) writes
to file descriptor 2 directly, not to `sys.stderr`, and their log levels are
private to those libraries: no setting or environment variable reaches them.
So the one way to keep a user's output to what matters is to capture the
descriptor around the call and pass on everything but the known INFO lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

_STDERR_LOCK = threading.RLock()  # one capture of fd 2 at a time (restored in order)


@contextlib.contextmanager
def filtered_native_stderr(drop: re.Pattern[bytes]) -> Iterator[None]:
    """Runs the body with file descriptor 2 captured, then passes on every line
    written there that `drop` does not match (a warning or an error still
    reaches stderr, just after the body)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().splitlines(keepends=True)
            kept = b"".join(line for line in lines if not drop.match(line))
            while kept:
                kept = kept[os.write(2, kept) :]
