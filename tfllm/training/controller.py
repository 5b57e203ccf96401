"""The outer loop: inner loops of `steps_per_loop` steps, and what happens between them.

In the spirit of Orbit's `Controller`: the trainer (`tfllm.training.trainer`)
owns the model, the optimizers, the checkpoint and the traced inner loop; the
controller decides how many steps each inner loop runs (never past an eval,
checkpoint or profiler edge), and between loops checks the loss, writes
summaries and progress, evaluates, stops early, saves, and turns a signal or a
lost parameter server into an error that says how to resume. It knows no
task, model or strategy beyond what `LoopTrainer` offers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import keras
import ml_collections
import tensorflow as tf

from tfllm.training import checkpoints
from tfllm.training.callbacks import EarlyStopping, ProfileWindow, Progress
from tfllm.training.coordination import cluster_failure
from tfllm.training.errors import NonFiniteLoss, TrainingInterrupted
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.signals import StopSignal, StopVote
from tfllm.training.state import LoopStats, TrainState
from tfllm.training.summaries import Summaries, final_metrics
from tfllm.training.tasks import Task
from tfllm.utils.io import read_json


class LoopTrainer(Protocol):
    """What the controller needs from a trainer (`tfllm.training.trainer.Trainer`)."""

    config: ml_collections.ConfigDict
    workdir: str
    strategy: tf.distribute.Strategy
    task: Task
    model: keras.Model
    plugins: Sequence[TrainingPlugin]
    sample_fn: Callable[[keras.Model, int], list[str]] | None
    chief: bool
    global_batch: int
    coordinator: tf.distribute.coordinator.ClusterCoordinator | None
    manager: tf.train.CheckpointManager
    stop_flag: tf.Variable | None  # read by the inner loop: a signal ends it early
    sharded: dict[str, int]

    @property
    def step(self) -> int: ...

    def restore_or_initialize(self) -> int: ...

    def evaluate(self) -> dict[str, float]: ...

    def train_iterator(self, start_step: int) -> Iterator: ...

    def run_steps(self, iterator: Iterator, num_steps: int) -> tuple[float, float]: ...

    def learning_rate(self) -> float: ...


class Controller:
    """Runs a trainer to `train.num_steps`, resuming if a checkpoint exists."""

    def __init__(self, trainer: LoopTrainer) -> None:
        self.trainer = trainer
        self.stop_vote = StopVote(trainer.strategy)
        self.last_step = 0  # last step read back, for messages when the cluster is gone
        self.previous_metrics: dict = {}
        self.progress: Progress | None = None

    def train(self) -> dict:
        """Runs to `train.num_steps`; returns the final metrics."""
        if self.trainer.coordinator is None:
            return self._train()
        try:
            return self._train()
        except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
            # The coordinator absorbs worker failures; what reaches here is a
            # parameter server (or the chief's link to it) gone.
            raise cluster_failure(e, self.last_step, self.trainer.workdir) from None

    def _train(self) -> dict:
        trainer = self.trainer
        cfg = trainer.config.train
        start = trainer.restore_or_initialize()
        total_steps = int(cfg.num_steps)
        metrics_path = os.path.join(trainer.workdir, "metrics.json")
        self.previous_metrics, history = checkpoints.read_records(trainer.workdir, start)
        state = TrainState(history=history)
        stopped_early = self.previous_metrics.get("early_stopped_at") == start
        # A run that early-stopped is finished, unless early stopping was since turned off.
        if start >= total_steps or (stopped_early and int(cfg.early_stopping_patience) > 0):
            print(f"Already trained to step {start} (num_steps={total_steps}); nothing to do.")
            return read_json(metrics_path)
        stopper = EarlyStopping(
            int(cfg.early_stopping_patience), float(cfg.early_stopping_min_delta), state.history
        )

        summaries = Summaries(trainer.workdir, trainer.chief, trainer.task)
        if start == 0:
            summaries.write_hparams(trainer.config)
        iterator = trainer.train_iterator(start)
        progress = self.progress = Progress(total_steps, start, trainer.task.throughput_unit)
        last_eval: dict[str, float] = {}
        stats = None
        tokens_per_step = trainer.global_batch * trainer.task.tokens_per_example
        started = time.time()
        profiler = ProfileWindow(
            list(trainer.config.runtime.get("profile_steps", [])),
            os.path.join(trainer.workdir, "tensorboard", "train"),
            trainer.chief,
        )
        with StopSignal(trainer.stop_flag) as stop, profiler:
            while trainer.step < total_steps:
                step = self.last_step = trainer.step
                n = min(int(cfg.steps_per_loop), total_steps - step)
                # never run past an eval/checkpoint boundary inside one loop
                n = min(
                    n,
                    to_boundary(step, int(cfg.eval_every)),
                    to_boundary(step, int(cfg.checkpoint_every)),
                    profiler.steps_to_edge(step),
                )
                profiler.before(step)
                t0 = time.perf_counter()
                loss, norm = trainer.run_steps(iterator, n)
                elapsed = time.perf_counter() - t0
                if stop.received is not None:  # the loop may have ended early (signals.stop_flag)
                    n = max(1, min(n, trainer.step - step))
                self.last_step = step + n
                profiler.after(trainer.step)
                if not math.isfinite(loss):
                    last = trainer.manager.latest_checkpoint or "none"
                    raise NonFiniteLoss(
                        f"training loss became {loss} between steps {step} and {trainer.step}; "
                        f"stopped without saving (last good checkpoint: {last}). "
                        "Lower config.train.learning_rate or enable config.train.grad_clip_norm."
                    )
                stats = LoopStats(
                    trainer.step,
                    loss,
                    float(norm),
                    trainer.learning_rate(),
                    n * tokens_per_step / elapsed,
                    n * trainer.global_batch / elapsed,
                )
                state.tokens_per_second.append(stats.tokens_per_second)
                state.examples_per_second.append(stats.examples_per_second)
                summaries.write_train(stats)
                progress.update(stats)
                record = {
                    "step": stats.step,
                    "loss": loss,
                    "grad_norm": stats.grad_norm,
                    "learning_rate": stats.learning_rate,
                    "tokens_per_second": stats.tokens_per_second,
                    "examples_per_second": stats.examples_per_second,
                }
                at_end = trainer.step >= total_steps
                if at_end or trainer.step % int(cfg.eval_every) == 0:
                    last_eval = trainer.evaluate()
                    record.update(last_eval)
                    self._write_eval(summaries, last_eval)
                    if cfg.get("weight_histograms", False):
                        summaries.write_weight_histograms(trainer.step, trainer.model)
                state.history.append(record)
                if "eval_loss" in record and stopper.should_stop(record["eval_loss"]):
                    progress.note(stopper.reason(trainer.step))
                    self.previous_metrics["early_stopped_at"] = trainer.step
                    at_end = True
                stopping = self.stop_vote(stop.received is not None)
                if at_end or trainer.step % int(cfg.checkpoint_every) == 0 or stopping:
                    self._save(state, last_eval, stats, time.time() - started)
                if at_end:
                    break
                if stopping:
                    raise TrainingInterrupted(
                        f"interrupted at step {trainer.step}; checkpoint saved in "
                        f"{os.path.join(trainer.workdir, 'checkpoints')}. "
                        "Run the same command to resume."
                    )
        return self._final_metrics(state, last_eval, stats, time.time() - started)

    def _write_eval(self, summaries: Summaries, results: dict[str, float]) -> None:
        """Eval scalars and text samples (chief only) to TensorBoard, one line to progress."""
        trainer = self.trainer
        sample = trainer.sample_fn
        samples = sample(trainer.model, trainer.step) if (sample and trainer.chief) else []
        summaries.write_eval(trainer.step, results, samples)
        if results:
            self.progress.note(f"step {trainer.step}: {trainer.task.describe(results)}")

    def _final_metrics(
        self, state: TrainState, last_eval: dict, stats: LoopStats | None, wall: float
    ) -> dict:
        trainer = self.trainer
        return final_metrics(
            self.previous_metrics,
            state,
            last_eval,
            stats,
            wall,
            step=trainer.step,
            model=trainer.model,
            config=trainer.config,
            replicas=trainer.strategy.num_replicas_in_sync,
            sharded=trainer.sharded,
            plugins=trainer.plugins,
        )

    def _save(self, state: TrainState, last_eval: dict, stats: LoopStats, wall: float) -> None:
        trainer = self.trainer
        checkpoints.save(
            trainer.manager,
            trainer.step,
            trainer.chief,
            trainer.workdir,
            state.history,
            lambda: self._final_metrics(state, last_eval, stats, wall),
        )


def to_boundary(step: int, every: int) -> int:
    """Steps from `step` to the next multiple of `every`."""
    return every - step % every
