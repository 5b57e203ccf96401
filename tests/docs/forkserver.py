"""A fork server for the docs run: `tfllm-*` commands without paying TF's import each time.

Importing TensorFlow, Keras and tfllm costs about 5 s on the CI box, and the docs
run executes about 80 commands, most of which then work for only a few seconds
with tiny settings. So the server imports everything once and forks one child
per command; the child runs the command's module as `__main__`, exactly as
`python -m tfllm.cli.<cmd>` would, with the caller's argv, cwd, environment and
stdin/stdout/stderr (passed over the socket with SCM_RIGHTS).

Forking after `import tensorflow` is safe because nothing has started the TF
runtime yet (no op has run, no device was listed), so each child initialises
its own runtime: logical CPUs, TF_CONFIG and thread settings all still apply.
The server is single-threaded on purpose (select + waitpid), so a fork never
copies a lock that another thread holds.

The test suite's `run_cli` (tests/conftest.py) uses a second, plain server
per test process, which runs each command exactly as given (`--plain`): about
150 command runs that would each import TensorFlow again.

    python tests/docs/forkserver.py SOCKET [--plain]   # serve until killed
    TFLLM_FORKSERVER=SOCKET tfllm-train ...      # the bin/ wrappers: client()
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import traceback

ENV = "TFLLM_FORKSERVER"
_MAX_REQUEST = 1 << 20


def client(module: str) -> None:
    """Runs `python -m module argv` in the server when it is up, else in this process."""
    path = os.environ.get(ENV)
    if not path:
        sys.argv[0] = module
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    _request(dict(module=module, argv=sys.argv[1:], cwd=os.getcwd(), env=dict(os.environ)))


def _request(fields: dict) -> None:
    """Sends one run to the server with this process's stdio; exits with its status."""
    request = json.dumps(fields).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(os.environ[ENV])
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2])
        reply = _recv_exact(conn, 4)
    sys.exit(struct.unpack("!i", reply)[0] if reply else 1)


def client_file(path: str) -> None:
    """Runs the Python file `path` as `python path` would, in the server when it is up."""
    if not os.environ.get(ENV):
        runpy.run_path(path, run_name="__main__")
        return
    _request(dict(path=path, module="", argv=[], cwd=os.getcwd(), env=dict(os.environ)))


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def serve(path: str, rewrite) -> None:
    """Forks a child per request; replies with its exit status (a shell's 128+N if signalled).

    `rewrite(module, argv, cwd) -> argv` is applied before the fork (the docs run
    uses it to add tiny settings). A client that goes away (killed by
    tfllm-launch, say) takes its child with it.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    children: dict[int, socket.socket] = {}  # pid -> the client waiting for it
    parent = os.getppid()
    while os.getppid() == parent:  # a test process that died leaves no server behind
        readable, _, _ = select.select([listener, *children.values()], [], [], 0.05)
        for ready in readable:
            if ready is listener:
                conn, _ = listener.accept()
                pid = _start(conn, rewrite, [listener, *children.values()])
                if pid:
                    children[pid] = conn
            elif not ready.recv(1, socket.MSG_PEEK):  # the client hung up
                pid = next(p for p, c in children.items() if c is ready)
                os.kill(pid, signal.SIGTERM)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):  # the client may be gone
                    conn.sendall(struct.pack("!i", 128 - code if code < 0 else code))
                conn.close()


def _start(conn: socket.socket, rewrite, others: list[socket.socket]) -> int | None:
    header, fds, _, _ = socket.recv_fds(conn, 4 + _MAX_REQUEST, 3)
    (length,) = struct.unpack("!I", header[:4])
    body = header[4:]
    while len(body) < length:
        body += conn.recv(length - len(body))
    request = json.loads(body)
    try:
        argv = rewrite(request["module"], request["argv"], request["cwd"])
    except Exception as e:  # a bad rewrite is the test's bug: say it in the caller's stderr
        os.write(fds[2], f"docs forkserver: cannot rewrite {request['argv']}: {e}\n".encode())
        conn.sendall(struct.pack("!i", 99))
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    for sock in others:  # the child keeps only its own client's descriptors
        sock.close()
    _child(request, argv, fds)  # never returns


def _child(request: dict, argv: list[str], fds: list[int]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if "numpy" in sys.modules:  # a fresh process's seed, not the server's copied state
            sys.modules["numpy"].random.seed()  # (Python's random reseeds itself on fork)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # its own subprocesses start from scratch
        if request.get("path"):  # a Python file (a docs page's ```python block)
            sys.argv = [request["path"]]
            runpy.run_path(request["path"], run_name="__main__")
        else:
            sys.argv = [request["module"], *argv]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _as_given(module: str, argv: list[str], cwd: str) -> list[str]:
    return argv


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # Third-party only: tfllm's own modules are cheap to import and are read
    # fresh by each child, so an edited checkout is what runs.
    import keras  # noqa: F401
    import keras_hub  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_text  # noqa: F401

    if sys.argv[2:] == ["--plain"]:
        rewrite = _as_given
    else:
        from tiny import rewrite  # the docs run's tiny settings

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(sys.argv[1], rewrite)


if __name__ == "__main__":
    main()
