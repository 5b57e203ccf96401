"""What a training run reports: TensorBoard summaries and `metrics.json`.

TensorBoard gets `train/` scalars every inner loop, `eval/` scalars and text
samples at every eval, and optional weight histograms; `metrics.json` gets the
run's summary (step, parameters, median speeds, the last eval, the plugins'
numbers), carried over from the previous metrics when a run resumes. Tags and
keys are a contract with users' dashboards and scripts; they are written here
and nowhere else. Only the chief writes; other workers get no-op writers.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

import keras
import ml_collections
import tensorflow as tf

from tfllm.distribute.mesh import to_host
from tfllm.training.hparams import write_hparams
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.state import LoopStats, TrainState
from tfllm.training.tasks import Task


class Summaries:
    """The run's `tensorboard/train` and `tensorboard/eval` writers and what goes in them."""

    def __init__(self, workdir: str, chief: bool, task: Task) -> None:
        self.workdir = workdir
        self.chief = chief
        self.task = task
        self.train = self._writer("train")
        self.eval = self._writer("eval")

    def _writer(self, name: str) -> tf.summary.SummaryWriter:
        if not self.chief:
            return tf.summary.create_noop_writer()
        return tf.summary.create_file_writer(os.path.join(self.workdir, "tensorboard", name))

    def write_hparams(self, config: ml_collections.ConfigDict) -> None:
        """The config for the HParams dashboard (chief only)."""
        if self.chief:
            write_hparams(config, os.path.join(self.workdir, "tensorboard"))

    def write_train(self, stats: LoopStats) -> None:
        writer = self.train
        with writer.as_default(step=stats.step):
            tf.summary.scalar("loss", stats.loss)
            for name, value in self.task.train_scalars(stats.loss).items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", stats.learning_rate)
            tf.summary.scalar("grad_norm", stats.grad_norm)
            tf.summary.scalar("tokens_per_second", stats.tokens_per_second)
            tf.summary.scalar("examples_per_second", stats.examples_per_second)
        writer.flush()

    def write_eval(self, step: int, results: dict[str, float], samples: list[str]) -> None:
        writer = self.eval
        with writer.as_default(step=step):
            for key, value in results.items():
                tf.summary.scalar(key.removeprefix("eval_"), value)
            if samples:
                text = "\n\n".join(f"```\n{s}\n```" for s in samples)
                tf.summary.text("samples", text)
        writer.flush()

    def write_weight_histograms(self, step: int, model: keras.Model) -> None:
        """`weights/<layer>/<variable>` histograms in train/ (config.train.weight_histograms).

        Written at eval time, not every loop: each one reads every weight to the
        host (an all-gather under tensor parallelism), which costs a full copy
        of the model.
        """
        writer = self.train
        with writer.as_default(step=step):
            for variable in model.trainable_variables:
                # Without the model's own name (`gpt_3/`): tags then match across runs.
                name = variable.path.split("/", 1)[-1]
                tf.summary.histogram(f"weights/{name}", to_host(variable))
        writer.flush()


def final_metrics(
    previous: dict,
    state: TrainState,
    last_eval: dict,
    stats: LoopStats | None,
    wall: float,
    *,
    step: int,
    model: keras.Model,
    config: ml_collections.ConfigDict,
    replicas: int,
    sharded: dict[str, int],
    plugins: Sequence[TrainingPlugin] = (),
) -> dict:
    """The content of `metrics.json`: `previous` (the resumed run's) updated by this one."""
    metrics = dict(previous)
    metrics.update(
        {
            "step": step,
            "num_params": int(model.count_params()),
            "strategy": config.runtime.strategy,
            "replicas": replicas,
            **({"sharded_variables": sharded} if sharded else {}),
        }
    )
    if stats is not None:
        metrics.update({"loss": stats.loss, "train_loss": stats.loss})
        metrics["train_wall_seconds"] = previous.get("train_wall_seconds", 0.0) + wall
    if state.tokens_per_second:
        # The first loop of a process includes tracing; leave it out when we can.
        steady = state.tokens_per_second[1:] or state.tokens_per_second
        metrics["tokens_per_second"] = statistics.median(steady)
        steady = state.examples_per_second[1:] or state.examples_per_second
        metrics["examples_per_second"] = statistics.median(steady)
    metrics.update(last_eval)
    for plugin in plugins:
        metrics.update(plugin.summary(model))
    return metrics
