"""What every `tfllm-*` command shares: flags, error handling, runtime set-up."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags

from tfllm.config import load_workdir_config, validate
from tfllm.errors import ConfigError, TfllmError

FLAGS = flags.FLAGS


def define_workdir_flag(required: bool = True) -> None:
    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory: tokenizer/, checkpoints/, "
        "tensorboard/, metrics.json, config.json, export/.",
        required=required,
    )


def define_debug_flag() -> None:
    flags.DEFINE_bool("debug", False, "Show full tracebacks for user errors.")


def command_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tfllm"


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, non-zero exit: the contract for bad input."""
    print(f"{command_name()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _check_config_path(argv: Sequence[str]) -> None:
    """Rejects a missing `--config` file before ml_collections turns it into a traceback."""
    for i, arg in enumerate(argv):
        path = None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        if path is not None and not os.path.isfile(path):
            fail(f"--config: no such file: {path}")


def run(main: Callable[[Sequence[str]], int | None]) -> None:
    """`absl.app.run` with user errors turned into one clear line."""
    _check_config_path(sys.argv[1:])
    # TensorFlow logs every SavedModel signature rename etc. at INFO; users see
    # warnings and our own progress lines unless they pass --verbosity=0.
    FLAGS.set_default("verbosity", -1)

    def wrapped(argv: Sequence[str]) -> int | None:
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])} (flags are --name=value)")
        try:
            return main(argv)
        except TfllmError as e:
            if FLAGS.is_parsed() and "debug" in FLAGS and FLAGS.debug:
                traceback.print_exc()
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        return None

    app.run(wrapped)


def resolve_config(
    flag_config: ml_collections.ConfigDict | None,
    workdir: str | None,
) -> ml_collections.ConfigDict:
    """`--config` if given, else the workdir's saved `config.json`."""
    if flag_config is not None:
        from tfllm.config import base_config

        config = base_config()
        config.update(flag_config)  # recipe files may omit keys; defaults fill them
    elif workdir:
        config = load_workdir_config(workdir)
    else:
        raise ConfigError("--config: required (or a --workdir that holds config.json)")
    validate(config)
    return config


def setup_runtime(config: ml_collections.ConfigDict) -> None:
    """Device split, precision and seeds, in the order TensorFlow needs them.

    Logical CPUs must be configured before TF touches a device; the global
    seed must be set BEFORE any SentencePiece tokenizer is built (setting it
    later destroys the tokenizer's resource — DESIGN §2).
    """
    import keras

    from tfllm.training.strategy import configure_logical_cpus

    configure_logical_cpus(int(config.runtime.logical_cpus))
    keras.mixed_precision.set_global_policy(config.runtime.precision)
    keras.utils.set_random_seed(int(config.train.seed))


def print_summary(title: str, rows: Sequence[tuple[str, object]]) -> None:
    """The short table every command ends with: what was written, key numbers."""
    width = max(len(k) for k, _ in rows) if rows else 0
    print(f"\n== {title} ==")
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"  {key.ljust(width)}  {value}")
    sys.stdout.flush()
