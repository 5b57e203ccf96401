"""What every `tfllm-*` command shares: flags, error handling, runtime set-up."""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from tfllm.config import INFERENCE_STRATEGIES, load_config_file, load_workdir_config, validate
from tfllm.errors import ConfigError, TfllmError
from tfllm.utils.argv import command_name  # re-exported: cli.common.command_name

FLAGS = flags.FLAGS


def define_workdir_flag(required: bool = True) -> None:
    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory: tokenizer/, checkpoints/, "
        "tensorboard/, metrics.json, config.json, export/.",
        required=required,
    )


class _ConfigFileParser(flags.ArgumentParser):
    """`--config=FILE`: a Python config (`get_config()`, ml_collections' own parser), or
    a `config.json` a run or `tfllm-import` wrote, so a new run can start from its model."""

    def __init__(self, python_parser: flags.ArgumentParser) -> None:
        self._python = python_parser

    def parse(self, argument):
        if not str(argument).endswith(".json"):
            return self._python.parse(argument)
        try:
            config = load_config_file(argument)
        except TfllmError as e:
            raise ValueError(str(e)) from None  # absl reports a bad flag value in one line
        config.lock()  # as a Python config is locked: overrides cannot add keys
        return config

    def flag_type(self) -> str:
        return self._python.flag_type()


def define_config_flag(help_string: str) -> None:
    """`--config` with `--config.section.key=value` overrides; `.py` or `.json` files."""
    config_flags.DEFINE_config_file("config", None, help_string)
    FLAGS["config"].parser = _ConfigFileParser(FLAGS["config"].parser)


def define_debug_flag() -> None:
    flags.DEFINE_bool("debug", False, "Show full tracebacks for user errors.")


def define_inference_runtime_flags() -> None:
    """--strategy / --logical_cpus / --tensor_parallel of tfllm-generate and tfllm-evaluate.

    Inference defaults to one device whatever the run was trained on: a
    checkpoint's runtime describes its training cluster (TF_CONFIG, TPU),
    which is rarely where it is evaluated; `--strategy=checkpoint` opts into
    the run's own `config.runtime`.
    """
    flags.DEFINE_enum(
        "strategy",
        "default",
        ["checkpoint", *INFERENCE_STRATEGIES],
        "Inference strategy; checkpoint: the run's own config.runtime "
        "(docs/distributed.md, Distributed inference).",
    )
    flags.DEFINE_integer(
        "logical_cpus", None, "Split the host CPU into N logical devices (default 0, or the run's)."
    )
    flags.DEFINE_integer(
        "tensor_parallel", None, "Split the model over N devices (default: 1, or the run's)."
    )


def inference_strategy(config: ml_collections.ConfigDict):
    """(runtime, strategy) from the inference flags and the run's `config.runtime`.

    Must run before TensorFlow initialises devices (logical CPUs are set here).
    """
    from tfllm.distribute.strategy import create_inference_strategy, inference_runtime

    runtime = inference_runtime(
        config.runtime, FLAGS.strategy, FLAGS.logical_cpus, FLAGS.tensor_parallel
    )
    return runtime, create_inference_strategy(runtime)


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
        if path is not None and ":" in path and not os.path.isfile(path):
            path = path.rsplit(":", 1)[0]  # file.py:argument calls get_config(argument)
        if path is not None and not os.path.isfile(path):
            fail(f"--config: no such file: {path}")


# File-system failures a user can cause or fix (permissions, full disk, a file
# where a directory should be); anything else is a bug and keeps its traceback.
_USER_OS_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.EDQUOT,
}


def _tf_file_error(e: Exception) -> str | None:
    """One line for TensorFlow's own file-system errors (checkpoint/summary writes)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    kinds = (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError)
    if isinstance(e, kinds) or (isinstance(e, tf.errors.OpError) and "No space left" in str(e)):
        first = str(e.message if hasattr(e, "message") else e).strip().splitlines()[0]
        return f"{type(e).__name__}: {first[:300]}"
    return None


def workdir_lock(workdir: str, config: ml_collections.ConfigDict | None = None):
    """The workdir's writer lock; multi-worker jobs lock per task (they share W)."""
    from tfllm.utils.lock import WorkdirLock

    name = ".lock"
    if config is not None and config.runtime.strategy == "multi_worker":
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        name = f".lock.{task.get('type', 'worker')}{task.get('index', 0)}"
    return WorkdirLock(workdir, command_name(), name)


def run(main: Callable[[Sequence[str]], int | None]) -> None:
    """`absl.app.run` with user errors turned into one clear line."""
    _check_config_path(sys.argv[1:])
    # absl's --help lists the key flags of the module named by sys.argv[0]; for a
    # console script that is the generated wrapper, which defines none, so --help
    # printed no flags at all. Register the command module's flags under it.
    for flag in FLAGS.get_key_flags_for_module(main.__module__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    # TensorFlow logs every SavedModel signature rename etc. at INFO; users see
    # warnings and our own progress lines unless they pass --verbosity=0.
    FLAGS.set_default("verbosity", -1)

    started = []  # set once flags parsed: later AttributeErrors are bugs, not config keys

    def wrapped(argv: Sequence[str]) -> int | None:
        started.append(True)
        # absl's app.run leaves the root logger (which TensorFlow's logger
        # inherits) at INFO whatever the default above says, so tf.distribute's
        # INFO chatter would bury the progress lines: apply the level here.
        present = FLAGS["verbosity"].present
        absl_logging.set_verbosity(FLAGS.verbosity if present else absl_logging.WARNING)
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])} (flags are --name=value)")
        debug = "debug" in FLAGS and FLAGS.debug
        try:
            return main(argv)
        except TfllmError as e:
            if debug:
                traceback.print_exc()
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as e:
            if debug or e.errno not in _USER_OS_ERRORS:
                raise
            fail(f"cannot write or read {e.filename or 'a file'}: {e.strerror}")
        except Exception as e:  # noqa: BLE001 - only TF's file-system errors are handled
            message = _tf_file_error(e)
            if debug or message is None:
                raise
            fail(message)
        return None

    try:
        app.run(wrapped)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these while parsing `--config.a.b=v` for a key
        # the config does not have; anything raised later is handled above.
        if started or ("debug" in FLAGS and FLAGS.is_parsed() and FLAGS.debug):
            raise
        fail_unknown_config_key(e)


def fail_unknown_config_key(e: BaseException) -> None:
    """One line for the KeyError/AttributeError ml_collections raises on
    `--config.a.b=v` when the config has no such key."""
    overrides = [a.split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--config.")]
    lines = str(e.args[0] if e.args else e).splitlines() or [""]
    key = lines[0].strip("\\'\" ")
    hint = f"; {lines[1].strip()}" if len(lines) > 1 else ""
    named = [o for o in overrides if key in o.split(".")] or overrides
    fail(
        f"{', '.join(named) or '--config'}: no such config key {key!r}{hint} "
        "(docs/configuration.md lists them)"
    )


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

    from tfllm.distribute.strategy import configure_logical_cpus, configure_threads

    configure_logical_cpus(int(config.runtime.logical_cpus))
    configure_threads(int(config.runtime.intra_op_threads), int(config.runtime.inter_op_threads))
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
