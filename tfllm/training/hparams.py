"""The run's config on TensorBoard's HParams dashboard, so runs compare side by side.

Written once per training run (on the chief) into `W/tensorboard/`, the parent
of the `train/` and `eval/` runs: the dashboard treats that directory as one
session and reads its metrics (eval loss, perplexity or accuracy, tokens/s)
from the scalars below it, so pointing TensorBoard at a directory of
workdirs gives one row per run.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import tensorflow as tf

# Sections that describe the experiment; `export` settings do not change a run.
_SECTIONS = ("data", "tokenizer", "model", "train", "runtime")


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
    """`section.key` -> value, with lists as strings (HParams takes scalars only)."""
    flat: dict[str, Any] = {}
    for section in _SECTIONS:
        for key, value in config[section].items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
            else:
                flat[f"{section}.{key}"] = str(list(value) if isinstance(value, tuple) else value)
    return flat


def write_hparams(config: ml_collections.ConfigDict, logdir: str) -> None:
    """Records the config for the HParams dashboard (trial id = the workdir's name)."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(logdir)
    trial = os.path.basename(os.path.dirname(os.path.abspath(logdir)))
    with writer.as_default():
        hp.hparams(flat_hparams(config), trial_id=trial)
    writer.flush()
    writer.close()
