"""Reading a checkpoint back into live objects, all of which must find their values.

Three stages read a tfllm checkpoint into a model: resuming a training run
(`tfllm.training`), loading a trained workdir (`tfllm.inference.loading`) and
starting a compression run from its source workdir (`tfllm.compress.run`). Each
must fail when some object found nothing to restore — a model built from a
config that does not match the checkpoint would otherwise run on its random
initial weights — and say so in one line. The check lives here, in `utils`,
so that every layer may call it.

Which checkpoint to read is decided here too (`newest_readable`): the newest
kept checkpoint whose every tensor reads back, so that a checkpoint cut short
(power loss, a full disk) falls back to the previous one with one warning
line instead of a raw `IndexError` (`restore_newest` = that + `restore_weights`);
`checkpoint_at_step` picks an earlier kept one by its step.
`sync_checkpoint` flushes a freshly written checkpoint to disk.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping

import tensorflow as tf
from absl import logging

from tfllm.errors import WorkdirError
from tfllm.utils.io import fsync_directory, fsync_file


def restore_weights(
    path: str,
    objects: tf.train.Checkpoint | Mapping[str, object],
    *,
    partial: bool = False,
    mismatch: str | None = None,
):
    """Restores checkpoint `path` into `objects`; every existing object must match.

    Args:
      path: a checkpoint prefix, e.g. from `tf.train.latest_checkpoint`.
      objects: a `tf.train.Checkpoint`, or the named objects to build one from
        (`{"model": model}`); the names are the checkpoint's object names.
      partial: the checkpoint may hold values nothing here asks for (an
        optimizer's slots when only the model is loaded); silences the
        warnings about them.
      mismatch: when an object is not matched, raise `WorkdirError` with
        `"{path}: {mismatch} (<first 120 characters of the reason>)"`; without
        it, TensorFlow's `AssertionError` propagates.

    Returns:
      The checkpoint's load status.
    """
    checkpoint = (
        objects if isinstance(objects, tf.train.Checkpoint) else tf.train.Checkpoint(**objects)
    )
    status = checkpoint.restore(path)
    if partial:
        status = status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        if mismatch is None:
            raise
        raise WorkdirError(f"{path}: {mismatch} ({str(e)[:120]})") from None
    return status


def _step(prefix: str) -> int:
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def kept_checkpoints(directory: str) -> list[str]:
    """The checkpoint prefixes kept in `directory`, newest first.

    The order is the `checkpoint` state file's (the one `CheckpointManager`
    writes): its latest, then the other kept ones from the newest. When that
    file is missing or unreadable, the `*.index` files found there, by step.
    """
    try:
        state = tf.train.get_checkpoint_state(directory)
    except ValueError:  # an empty state file
        state = None
    if state is not None and state.model_checkpoint_path:
        paths = [state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)]
        return list(dict.fromkeys(paths))
    found = [p[: -len(".index")] for p in glob.glob(os.path.join(directory, "*.index"))]
    return sorted(found, key=_step, reverse=True)


def _data_files(prefix: str) -> list[str]:
    return sorted(glob.glob(glob.escape(prefix) + ".data-*"))


def unreadable_file(prefix: str) -> tuple[str, str] | None:
    """None when every tensor of checkpoint `prefix` reads back, else (file, why).

    Reads the index and every tensor (TensorFlow checks each one's CRC), so a
    truncated, missing or corrupted index or data shard is found before any
    value reaches a live object.
    """
    index = prefix + ".index"
    if not os.path.exists(index) and "://" not in prefix:
        return index, "missing"
    stage = "index"
    try:
        reader = tf.train.load_checkpoint(prefix)
        stage = "data"
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError) as e:
        why = str(getattr(e, "message", None) or e).strip().splitlines()
        why = (why[0] if why else type(e).__name__)[:160]
        named = [f for f in [index, *_data_files(prefix)] if f in why]
        if named:
            return named[0], why
        if stage == "index":
            return index, why
        shards = _data_files(prefix)
        return (shards[0] if len(shards) == 1 else prefix + ".data-*"), why
    return None


def newest_readable(directory: str) -> str | None:
    """The newest kept checkpoint in `directory` that reads back whole.

    Returns None when `directory` holds no checkpoint at all. Unreadable newer
    checkpoints are skipped with ONE warning line naming them and the one
    used; when none is readable, raises `WorkdirError` naming the newest's
    damaged file.
    """
    bad: list[tuple[str, str]] = []
    for prefix in kept_checkpoints(directory):
        damage = unreadable_file(prefix)
        if damage is None:
            if bad:
                others = f" (and {len(bad) - 1} older unreadable)" if len(bad) > 1 else ""
                logging.warning(
                    "checkpoint file %s is unreadable (%s)%s; using %s (step %d) instead",
                    bad[0][0],
                    bad[0][1],
                    others,
                    prefix,
                    _step(prefix),
                )
            return prefix
        bad.append(damage)
    if not bad:
        return None
    others = f"; the {len(bad) - 1} older kept one(s) are unreadable too" if len(bad) > 1 else ""
    raise WorkdirError(
        f"{bad[0][0]}: checkpoint unreadable ({bad[0][1]}){others}; "
        f"no readable checkpoint in {directory}"
    )


def restore_newest(
    directory: str,
    objects: tf.train.Checkpoint | Mapping[str, object],
    *,
    partial: bool = False,
    mismatch: str | None = None,
) -> str | None:
    """`restore_weights` from `newest_readable(directory)`; its path, or None if none."""
    path = newest_readable(directory)
    if path is not None:
        restore_weights(path, objects, partial=partial, mismatch=mismatch)
    return path


def checkpoint_at_step(directory: str, step: int) -> str:
    """The kept checkpoint of `step` in `directory`, read back whole, or `WorkdirError`.

    For looking back at an earlier point of a run (accuracy against steps,
    time to a target): the error lists the steps that are kept, since
    `train.max_checkpoints` deletes the older ones as training goes.
    """
    kept = kept_checkpoints(directory)
    chosen = [prefix for prefix in kept if _step(prefix) == step]
    if not chosen:
        steps = ", ".join(str(s) for s in sorted(_step(p) for p in kept)) or "none"
        raise WorkdirError(
            f"--step: no checkpoint of step {step} in {directory} (kept: {steps}; "
            "train.max_checkpoints sets how many are kept)"
        )
    damage = unreadable_file(chosen[0])
    if damage is not None:
        raise WorkdirError(f"{damage[0]}: checkpoint unreadable ({damage[1]})")
    return chosen[0]


def sync_checkpoint(prefix: str) -> None:
    """Flushes checkpoint `prefix` to disk: its index and data files, then the
    `checkpoint` state file beside them, then their directory.

    TensorFlow renames each file into place but never fsyncs, so after a power
    loss a checkpoint the state file names may be empty or cut short. Remote
    file systems (`gs://...`) are left alone.
    """
    if "://" in prefix:
        return
    directory = os.path.dirname(prefix)
    for path in [*_data_files(prefix), prefix + ".index", os.path.join(directory, "checkpoint")]:
        if os.path.exists(path):
            fsync_file(path)
    fsync_directory(directory)
