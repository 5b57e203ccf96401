"""tfllm-serve: a long-lived HTTP server for a workdir's LM or classifier.

  tfllm-serve --workdir=runs/tiny [--backend=keras|saved_model] [--port=8501]
  curl -s localhost:8501/v1/models/tiny:predict -d '{"instances": ["ROMEO:"]}'
  curl -sN localhost:8501/v1/models/tiny:generate \
      -d '{"prompt": "ROMEO:", "max_new_tokens": 32, "stream": true}'

TF Serving's REST API (`:predict`, model status and metadata) plus
`:generate` with server-sent-event streaming (docs/serving.md). Requests that
arrive within --batch_window_ms of each other are decoded together, up to
--max_batch rows, each with its own sampler, seed and token budget; a request
gives the text `tfllm-generate` gives with the same settings and seed. The
model is loaded and compiled before the server says it is ready, so the
first request pays no tracing.
"""

from __future__ import annotations

import os
import socket
import sys

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)
flags.DEFINE_enum(
    "backend",
    "keras",
    ["keras", "saved_model"],
    "keras: the checkpoint (streams token chunks); saved_model: W/export/saved_model.",
)
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8501, "Port (TF Serving's REST port by default; 0: any free one).")
flags.DEFINE_string("model_name", None, "Name in the URLs (default: the workdir's basename).")
flags.DEFINE_integer("max_batch", 8, "Most rows decoded together.")
flags.DEFINE_float("batch_window_ms", 5.0, "How long a batch waits for more requests.")
flags.DEFINE_integer("stream_chunk", 4, "Decode steps per compiled call (tokens per event).")
flags.DEFINE_integer("max_new_tokens", 64, "Default max_new_tokens of a request.")
flags.DEFINE_integer("max_queued", 256, "Requests waiting beyond this get a 503.")


def _check_flags() -> None:
    if not 1 <= FLAGS.max_batch <= 256:
        common.fail(f"--max_batch: must be in [1, 256], got {FLAGS.max_batch}")
    if not 0 <= FLAGS.batch_window_ms <= 10_000:
        common.fail(f"--batch_window_ms: must be in [0, 10000], got {FLAGS.batch_window_ms}")
    if not 1 <= FLAGS.stream_chunk <= 256:
        common.fail(f"--stream_chunk: must be in [1, 256], got {FLAGS.stream_chunk}")
    if FLAGS.max_new_tokens < 1:
        common.fail(f"--max_new_tokens: must be >= 1, got {FLAGS.max_new_tokens}")
    if FLAGS.max_queued < 1:
        common.fail(f"--max_queued: must be >= 1, got {FLAGS.max_queued}")
    if not 0 <= FLAGS.port <= 65535:
        common.fail(f"--port: must be in [0, 65535], got {FLAGS.port}")


def _listen() -> socket.socket:
    """Binds before loading the model, so a taken port fails in a second, not a minute."""
    family = socket.AF_INET6 if ":" in FLAGS.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((FLAGS.host, FLAGS.port))
    except OSError as e:
        common.fail(f"--port: cannot listen on {FLAGS.host}:{FLAGS.port}: {e.strerror}")
    sock.listen(128)
    return sock


def _context(workdir: str) -> int | None:
    """An LM's context length from its config.json (None for a classifier)."""
    from tfllm.config import LM_NAMES, load_workdir_config
    from tfllm.errors import WorkdirError

    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir: no such directory: {workdir}")
    model = load_workdir_config(workdir).model
    return int(model.max_length) if model.name in LM_NAMES else None


def main(argv) -> None:
    del argv
    _check_flags()
    sock = _listen()
    import uvicorn

    from tfllm.serving.app import Service, build_app
    from tfllm.serving.batcher import Batcher
    from tfllm.serving.engines import load_engine

    name = FLAGS.model_name or os.path.basename(os.path.normpath(FLAGS.workdir))
    max_length = _context(FLAGS.workdir)
    default_max_new = FLAGS.max_new_tokens
    if max_length and default_max_new > max_length - 1:
        if FLAGS["max_new_tokens"].present:
            common.fail(f"--max_new_tokens: at most {max_length - 1} (the model's context - 1)")
        default_max_new = max_length - 1  # the default fits any model
    engine = load_engine(
        FLAGS.workdir,
        FLAGS.backend,
        max_rows=FLAGS.max_batch,
        chunk=FLAGS.stream_chunk,
        default_max_new=default_max_new,
    )
    engine.warm_up()
    batcher = Batcher(
        engine,
        max_rows=FLAGS.max_batch,
        window_s=FLAGS.batch_window_ms / 1000,
        max_queued=FLAGS.max_queued,
    )
    service = Service(name, engine, batcher, default_max_new)
    host, port = sock.getsockname()[:2]
    print(
        f"tfllm-serve: {name} ({engine.config.model.name} {engine.kind}, {engine.backend}) "
        f"ready on http://{host}:{port}/v1/models/{name}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        build_app(service), log_level="warning", access_log=False, timeout_graceful_shutdown=10
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        batcher.close()


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
