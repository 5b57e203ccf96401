"""The one custom distributed training loop (DESIGN §2), for every task.

Keras 3 `fit` does not run under MultiWorkerMirrored or ParameterServer, so
every strategy and every model (LM or classifier) goes through this loop: a
`tf.function` that runs `steps_per_loop` steps of `strategy.run(replica_step)`
(Orbit-style inner loop, so TPUs stay fed and Python overhead is paid once per
loop), periodic eval, checkpoints with automatic resume, TensorBoard summaries,
and atomic `metrics.json`. Losses, metrics, optimizers and schedules are Keras'. What
differs between an LM and a classifier (data, loss, eval metrics) lives in a
`Task` (`tfllm.training.tasks`); the loop itself does not know which it runs.

This module composes the parts, as Model Garden's `base_trainer.Trainer` does
under Orbit's controller: the `Trainer` builds the model, its optimizer groups,
the checkpoint and the traced inner loop (`step`), and hands the outer loop to
a `Controller` (`controller`), which uses `checkpoints`, `summaries`,
`callbacks`, `signals` and, under parameter-server training, `coordination`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tfllm import distribute
from tfllm.distribute.ps_sharding import expand_sharded, make_checkpointable, sharded_summary
from tfllm.distribute.strategy import is_chief
from tfllm.training import checkpoints
from tfllm.training.controller import Controller
from tfllm.training.coordination import (
    create_coordinator,
    per_worker_iterator,
    run_steps_on_workers,
)
from tfllm.training.errors import ClusterFailure, NonFiniteLoss, TrainingInterrupted
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.signals import stop_flag
from tfllm.training.state import LoopStats, TrainState
from tfllm.training.step import check_batch_divisible, create_param_groups, make_train_loop
from tfllm.training.tasks import LMTask, Task

__all__ = [
    "ClusterFailure",
    "LMTrainer",
    "LoopStats",
    "NonFiniteLoss",
    "TrainState",
    "Trainer",
    "TrainingInterrupted",
    "check_batch_divisible",
]


class Trainer:
    """Trains the model a `Task` describes under any tf.distribute strategy.

    Args:
      config: the validated run config.
      workdir: where checkpoints/, tensorboard/, metrics.json go.
      strategy: from `tfllm.distribute.strategy.create_strategy`.
      build_model: builds the Keras model (called under the strategy scope).
      task: data, loss and eval metrics of the task (`tfllm.training.tasks`).
      sample_fn: optional `(model, step) -> list[str]` for text samples at eval.
      plugins: `TrainingPlugin`s (pruning, QAT, distillation) hooked into the step.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        strategy: tf.distribute.Strategy,
        build_model: Callable[[], keras.Model],
        task: Task,
        sample_fn: Callable[[keras.Model, int], list[str]] | None = None,
        plugins: tuple[TrainingPlugin, ...] = (),
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.task = task
        self.sample_fn = sample_fn
        self.plugins = tuple(plugins)
        self.chief = is_chief(strategy)
        self.global_batch = int(config.train.batch_size)
        check_batch_divisible(config, strategy)
        self.coordinator = create_coordinator(strategy)
        with strategy.scope():
            # Sharded on a tensor-parallel mesh, placed per pipeline stage, or plain.
            self.model = distribute.build_model(strategy, build_model)
            # Sharded (ps) variables are trained shard by shard (tfllm.distribute.ps_sharding).
            self.train_variables = expand_sharded(self.model.trainable_variables)
            self.param_groups = create_param_groups(config, self.model)
            for optimizer, variables in self.param_groups:
                optimizer.build(variables)
            self.optimizer = self.param_groups[0][0]  # its iteration count is the step
            for plugin in self.plugins:
                plugin.setup(self.model, self.optimizer)
        self.sharded = sharded_summary(self.model.variables)
        if self.sharded:
            make_checkpointable(self.model.variables)
            for optimizer, _ in self.param_groups:
                make_checkpointable(optimizer.variables)
        self.checkpoint = checkpoints.create_checkpoint(self.model, self.param_groups, self.plugins)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            checkpoints.checkpoint_dir(workdir, strategy, self.chief),
            max_to_keep=int(config.train.max_checkpoints),
            step_counter=self.optimizer.iterations,
        )
        # Set on SIGINT/SIGTERM; the inner loop reads it to stop within a step (None
        # under multi_worker / parameter_server: `tfllm.training.signals.stop_flag`).
        self.stop_flag = stop_flag(strategy)
        # `train_loop(iterator, num_steps)`; an attribute, so tests may wrap it.
        self._train_loop = make_train_loop(
            config,
            strategy,
            self.model,
            task,
            self.param_groups,
            self.train_variables,
            self.plugins,
            stop=self.stop_flag,
        )
        self.controller = Controller(self)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self) -> int:
        """Resumes from the newest readable checkpoint, else applies `train.init_from`."""
        latest = checkpoints.restore_latest(self.workdir, self.checkpoint)
        if latest:
            logging.info("Resuming from step %d (%s)", self.step, latest)
            print(f"Resuming from step {self.step}", flush=True)
            return self.step
        checkpoints.initialize_weights(
            self.config, self.strategy, self.model, self.task, self.plugins
        )
        return 0

    def train_iterator(self, start_step: int) -> Iterator:
        """The distributed training input, from `start_step` on."""
        seed = int(self.config.train.seed) + start_step  # a resumed run sees fresh shuffles
        if self.coordinator is not None:
            return per_worker_iterator(
                self.coordinator, self.strategy, self.task, self.global_batch
            )

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return self.task.train_dataset(
                ctx.get_per_replica_batch_size(self.global_batch), seed, ctx
            )

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def evaluate(self) -> dict[str, float]:
        """The task's eval metrics (at least `eval_loss`); {} without an eval split.

        Under parameter_server the chief evaluates itself (inline evaluation,
        reading the variables from the ps tasks) between scheduled loops.
        """
        strategy = tf.distribute.get_strategy() if self.coordinator else self.strategy
        return self.task.evaluate(self.model, strategy, self.global_batch)

    def run_steps(self, iterator: Iterator, num_steps: int) -> tuple[float, float]:
        """Runs `num_steps` optimizer steps (fewer once `stop_flag` is set); returns
        (mean loss, last grad norm)."""
        if self.coordinator is None:
            loss, norm = self._train_loop(iterator, tf.constant(num_steps, tf.int32))
            return float(loss), float(norm)
        return run_steps_on_workers(
            self.coordinator,
            self._train_loop,
            iterator,
            num_steps,
            self.step,
            self.param_groups,
        )

    def learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)

    def train(self) -> dict:
        """Runs to `train.num_steps`, resuming if a checkpoint exists; returns final metrics."""
        return self.controller.train()


class LMTrainer(Trainer):
    """A `Trainer` on an `LMTask` (token windows, next-token loss, perplexity)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        strategy: tf.distribute.Strategy,
        build_model: Callable[[], keras.Model],
        train_ids: np.ndarray,
        eval_ids: np.ndarray | None,
        sample_fn: Callable[[keras.Model, int], list[str]] | None = None,
        plugins: tuple[TrainingPlugin, ...] = (),
    ) -> None:
        task = LMTask(
            train_ids,
            eval_ids,
            int(config.model.max_length),
            eval_batches=int(config.train.eval_batches),
        )
        super().__init__(config, workdir, strategy, build_model, task, sample_fn, plugins)
