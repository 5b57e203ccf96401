"""What a training run keeps on disk, and how a run starts from it.

A run's state is its checkpoint (`checkpoints/ckpt-<step>`: the model, the
optimizer(s) and each plugin's trackable state, under fixed object names that
existing workdirs depend on) plus `history.json` and `metrics.json`, written
together at every save so that a resumed run continues its records where they
stopped. A run without a checkpoint starts from `train.init_from` and the
plugins' own initial weights instead. Kept out of the controller so that the
layout of a workdir is written down in one place.

Resuming reads the newest *readable* checkpoint (`tfllm.utils.checkpoints.
restore_newest`: a truncated latest one falls back to the previous with one
warning line), and a save is flushed to disk (`sync_checkpoint`) before
`history.json` / `metrics.json` declare it written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence

import keras
import ml_collections
import tensorflow as tf

from tfllm.errors import ConfigError
from tfllm.models.lora import base_weights_only
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.step import ParamGroups
from tfllm.training.tasks import Task
from tfllm.utils.checkpoints import restore_newest, sync_checkpoint
from tfllm.utils.io import atomic_write_json, read_json


def create_checkpoint(
    model: keras.Model, param_groups: ParamGroups, plugins: Sequence[TrainingPlugin] = ()
) -> tf.train.Checkpoint:
    """The run's checkpoint; its object names are the layout of every workdir.

    `model`, `optimizer` (the first group's: its iteration count is the step),
    `backbone_optimizer` when the backbone has its own, and one object per
    plugin that has state, under the plugin's name.
    """
    objects = {"model": model, "optimizer": param_groups[0][0]}
    if len(param_groups) > 1:
        objects["backbone_optimizer"] = param_groups[1][0]
    for plugin in plugins:
        if plugin.trackable() is not None:
            objects[plugin.name] = plugin.trackable()
    return tf.train.Checkpoint(**objects)


def checkpoint_dir(workdir: str, strategy: tf.distribute.Strategy, chief: bool) -> str:
    """Chief writes the real checkpoints; other workers write throwaway copies.

    MultiWorkerMirrored needs every worker to take part in the save, but
    only the chief's copy is kept (as TensorFlow's docs prescribe).
    """
    base = os.path.join(workdir, "checkpoints")
    if chief:
        return base
    resolver = strategy.cluster_resolver
    return os.path.join(base, f".tmp_{resolver.task_type}_{resolver.task_id}")


def restore_latest(workdir: str, checkpoint: tf.train.Checkpoint) -> str | None:
    """Restores the newest readable checkpoint the chief kept in `workdir`.

    Returns its path, or None when there is none (a fresh run). Raises
    `WorkdirError` when checkpoints exist but none reads back whole.
    """
    return restore_newest(os.path.join(workdir, "checkpoints"), checkpoint)


def initialize_weights(
    config: ml_collections.ConfigDict,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    task: Task,
    plugins: Sequence[TrainingPlugin] = (),
) -> None:
    """A fresh run: weights from `train.init_from`, then each plugin's own start."""
    init_from = config.train.init_from
    if init_from:
        source = tf.train.latest_checkpoint(os.path.join(init_from, "checkpoints"))
        if not source:
            raise ConfigError(f"config.train.init_from: no checkpoint in {init_from}/checkpoints")
        # A LoRA run's adapters are not in the source: restore the base model only.
        with base_weights_only(model):
            message = task.initialize_from(model, init_from, source)
        print(message, flush=True)
    for plugin in plugins:
        with strategy.scope():  # cross-replica: assignments reach every replica
            message = plugin.initialize(model)
        if message:
            print(message, flush=True)


def read_records(workdir: str, start: int) -> tuple[dict, list[dict]]:
    """(metrics.json, history.json's records) of the run being resumed at `start`.

    Both empty for a fresh run (`start == 0`), whatever the workdir holds.
    """
    if not start:
        return {}, []
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    history = read_json(os.path.join(workdir, "history.json")).get("history", [])
    return metrics, history


def save(
    manager: tf.train.CheckpointManager,
    step: int,
    chief: bool,
    workdir: str,
    history: list[dict],
    metrics: Callable[[], dict],
) -> None:
    """Checkpoint `step`; on the chief also `history.json` and `metrics.json`.

    Every worker takes part in the (collective) save; the others then delete
    their throwaway copy. `metrics` is called on the chief only.
    """
    path = manager.save(checkpoint_number=step)
    if not chief:
        shutil.rmtree(manager.directory, ignore_errors=True)
        return
    sync_checkpoint(path)  # on disk before the records below name this step
    atomic_write_json(os.path.join(workdir, "history.json"), {"history": history})
    atomic_write_json(os.path.join(workdir, "metrics.json"), metrics())
