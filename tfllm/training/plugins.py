"""Hooks that change what one training step does, without a second loop.

Compression (pruning masks, fake quantization, a teacher's soft targets)
needs to touch the step of `tfllm.training.trainer.Trainer`: keep extra state
in the checkpoint, start from another run's weights, change the loss, or act
after each optimizer update. A plugin does exactly those four things, so every
strategy, inner loop, checkpoint and resume path of the one loop serves
compression too (DESIGN §2: one custom loop for everything).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class TrainingPlugin:
    """Base class: every hook is optional and does nothing by default."""

    name = "plugin"

    def setup(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        """Creates the plugin's variables; called inside the strategy's scope."""
        del model, optimizer

    def trackable(self) -> tf.Module | None:
        """State saved in (and restored from) the run's checkpoints, if any."""
        return None

    def initialize(self, model: keras.Model) -> str | None:
        """A fresh run's starting point (before step 0); returns a line to print."""
        del model
        return None

    def per_example_loss(self, task, model, inputs, targets, training: bool) -> tf.Tensor | None:
        """Replaces the task's loss when not None (same contract as `Task.per_example_loss`)."""
        del task, model, inputs, targets, training
        return None

    def after_update(self) -> None:
        """Runs in the replica context right after each optimizer update (graph mode)."""
        return None  # (a docstring-only body trips AutoGraph's converter)

    def summary(self, model: keras.Model) -> dict[str, float]:
        """Scalars for metrics.json and TensorBoard after training."""
        del model
        return {}
