"""Reading a checkpoint back into live objects, all of which must find their values.

Three stages read a tfllm checkpoint into a model: resuming a training run
(`tfllm.training`), loading a trained workdir (`tfllm.inference.loading`) and
starting a compression run from its source workdir (`tfllm.compress.run`). Each
must fail when some object found nothing to restore — a model built from a
config that does not match the checkpoint would otherwise run on its random
initial weights — and say so in one line. The check lives here, in `utils`,
so that every layer may call it.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfllm.errors import WorkdirError


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
