"""The one custom distributed training loop (DESIGN §2), for every task.

Keras 3 `fit` does not run under MultiWorkerMirrored or ParameterServer, so
every strategy and every model (LM or classifier) goes through this loop: a
`tf.function` that runs `steps_per_loop` steps of `strategy.run(replica_step)`
(Orbit-style inner loop, so TPUs stay fed and Python overhead is paid once per
loop), periodic eval, checkpoints with automatic resume, TensorBoard summaries,
and atomic `metrics.json`. Losses, metrics, optimizers and schedules are Keras'. What
differs between an LM and a classifier (data, loss, eval metrics) lives in a
`Task` (`tfllm.training.tasks`); the loop itself does not know which it runs.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tfllm import distribute
from tfllm.distribute.ps_sharding import (
    expand_sharded,
    make_checkpointable,
    sharded_summary,
    shards_of,
)
from tfllm.distribute.strategy import is_chief, is_multi_worker, is_parameter_server
from tfllm.errors import ConfigError, TfllmError
from tfllm.training.hparams import write_hparams
from tfllm.training.optim import create_optimizer
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.tasks import LMTask, Task
from tfllm.utils.io import atomic_write_json, read_json


class TrainingInterrupted(TfllmError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run can resume."""

    exit_code = 130  # the shell's convention for "stopped by Ctrl-C"


class ClusterFailure(TfllmError):
    """A parameter server (or the cluster) went away; the last checkpoint is resumable."""

    exit_code = 75  # EX_TEMPFAIL: restart the cluster and run again


class NonFiniteLoss(TfllmError):
    """The loss became NaN/Inf; the last good checkpoint is kept, nothing newer saved."""


@dataclass
class LoopStats:
    """What one inner loop reports back to Python."""

    step: int
    loss: float
    grad_norm: float
    learning_rate: float
    tokens_per_second: float
    examples_per_second: float


@dataclass
class TrainState:
    history: list[dict] = field(default_factory=list)
    tokens_per_second: list[float] = field(default_factory=list)
    examples_per_second: list[float] = field(default_factory=list)


def check_batch_divisible(
    config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy
) -> None:
    """The global batch must split evenly over replicas (static per-replica shapes)."""
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ConfigError(
            f"config.train.batch_size: {config.train.batch_size} is not divisible by the "
            f"{replicas} replicas of strategy {config.runtime.strategy!r}"
        )
    per_replica = config.train.batch_size // replicas
    if per_replica % config.train.grad_accum_steps:
        raise ConfigError(
            f"config.train.grad_accum_steps: {config.train.grad_accum_steps} does not divide "
            f"the per-replica batch {per_replica} ({replicas} replicas)"
        )


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between inner loops.

    A tf.function cannot be interrupted mid-loop without losing its step, so
    we finish the current loop, save a checkpoint, then stop.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.received is not None:  # second Ctrl-C: stop right away
            raise KeyboardInterrupt
        self.received = signum
        logging.warning("Signal %d received: stopping after this loop and saving.", signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
        # Parameter-server training is asynchronous: the chief schedules steps
        # on workers through a coordinator; each step is one worker's batch.
        self.coordinator = (
            tf.distribute.coordinator.ClusterCoordinator(strategy)
            if is_parameter_server(strategy)
            else None
        )
        with strategy.scope():
            # Sharded on a tensor-parallel mesh, placed per pipeline stage, or plain.
            self.model = distribute.build_model(strategy, build_model)
            # Sharded (ps) variables are trained shard by shard (tfllm.distribute.ps_sharding).
            self.train_variables = expand_sharded(self.model.trainable_variables)
            self.param_groups = self._create_optimizers()
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
        objects = {"model": self.model, "optimizer": self.optimizer}
        if len(self.param_groups) > 1:
            objects["backbone_optimizer"] = self.param_groups[1][0]
        for plugin in self.plugins:
            if plugin.trackable() is not None:
                objects[plugin.name] = plugin.trackable()
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self._checkpoint_dir(),
            max_to_keep=int(config.train.max_checkpoints),
            step_counter=self.optimizer.iterations,
        )
        self._train_loop = self._make_train_loop()
        self._stop_vote = None
        self.last_step = 0  # last step read back, for messages when the cluster is gone

    def _create_optimizers(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """One (optimizer, variables) group, or two when the backbone learns slower.

        Keras optimizers have one learning rate, and Adam-style updates ignore a
        constant gradient scale, so a lower backbone rate (ULMFiT's
        discriminative fine-tuning) needs its own optimizer over the backbone's
        variables with a scaled schedule.
        """
        groups = self._optimizer_groups()
        for optimizer, variables in groups:
            # Weight-decay exclusions name the Keras variable; its shards inherit them.
            for variable in variables:
                shards = shards_of(variable)
                if shards and not optimizer._use_weight_decay(variable):  # noqa: SLF001
                    optimizer.exclude_from_weight_decay(var_list=shards)
        return [(optimizer, expand_sharded(variables)) for optimizer, variables in groups]

    def _optimizer_groups(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        train = self.config.train
        precision = self.config.runtime.precision
        variables = list(self.model.trainable_variables)
        scale = float(train.get("backbone_lr_scale", 1.0))
        backbone = getattr(self.model, "backbone_layers", None)
        if scale == 1.0 or backbone is None:
            return [(create_optimizer(train, self.model, precision), variables)]
        if precision == "mixed_float16":
            raise ConfigError(
                "config.train.backbone_lr_scale: a separate backbone learning rate needs one "
                "loss scale per optimizer; use precision mixed_bfloat16 or float32 with it"
            )
        backbone_ids = {id(v) for layer in backbone() for v in layer.trainable_variables}
        head = [v for v in variables if id(v) not in backbone_ids]
        body = [v for v in variables if id(v) in backbone_ids]
        if not body:  # everything in the backbone is frozen
            return [(create_optimizer(train, self.model, precision), variables)]
        scaled = ml_collections.ConfigDict(train.to_dict())
        scaled.learning_rate = float(train.learning_rate) * scale
        return [
            (create_optimizer(train, self.model, precision), head),
            (create_optimizer(scaled, self.model, precision), body),
        ]

    # ----------------------------------------------------------------- setup
    def _checkpoint_dir(self) -> str:
        """Chief writes the real checkpoints; other workers write throwaway copies.

        MultiWorkerMirrored needs every worker to take part in the save, but
        only the chief's copy is kept (as TensorFlow's docs prescribe).
        """
        base = os.path.join(self.workdir, "checkpoints")
        if self.chief:
            return base
        resolver = self.strategy.cluster_resolver
        return os.path.join(base, f".tmp_{resolver.task_type}_{resolver.task_id}")

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self) -> int:
        """Resumes from the latest checkpoint, else applies `train.init_from`."""
        latest = tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints"))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resuming from step %d (%s)", self.step, latest)
            print(f"Resuming from step {self.step}", flush=True)
            return self.step
        init_from = self.config.train.init_from
        if init_from:
            source = tf.train.latest_checkpoint(os.path.join(init_from, "checkpoints"))
            if not source:
                raise ConfigError(
                    f"config.train.init_from: no checkpoint in {init_from}/checkpoints"
                )
            message = self.task.initialize_from(self.model, init_from, source)
            print(message, flush=True)
        for plugin in self.plugins:
            with self.strategy.scope():  # cross-replica: assignments reach every replica
                message = plugin.initialize(self.model)
            if message:
                print(message, flush=True)
        return 0

    def _distributed_train_iterator(self, start_step: int):
        seed = int(self.config.train.seed) + start_step  # a resumed run sees fresh shuffles
        if self.coordinator is not None:
            return self._per_worker_iterator()

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return self.task.train_dataset(
                ctx.get_per_replica_batch_size(self.global_batch), seed, ctx
            )

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _per_worker_iterator(self):
        """One input pipeline on each parameter-server worker.

        The dataset function is traced once and runs on every worker, so a
        fixed seed would give all workers the same batches; each worker seeds
        its shuffle from its own clock instead. Asynchronous training is not
        reproducible step by step anyway (updates interleave as they arrive).
        """
        batch = self.global_batch

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            seed = tf.cast(tf.timestamp() * 1e6, tf.int64) % (2**31 - 1)
            return self.task.train_dataset(batch, seed, ctx)

        strategy = self.strategy
        return iter(
            self.coordinator.create_per_worker_dataset(
                lambda: strategy.distribute_datasets_from_function(dataset_fn)
            )
        )

    # ------------------------------------------------------------- tf graphs
    def _make_train_loop(self):
        model, optimizer, strategy, task = self.model, self.optimizer, self.strategy, self.task
        groups = self.param_groups
        train_variables = self.train_variables
        # Where each group's variables sit in train_variables.
        position = {id(v): i for i, v in enumerate(train_variables)}
        group_index = [[position[id(v)] for v in variables] for _, variables in groups]
        global_batch = self.global_batch
        clip = float(self.config.train.grad_clip_norm)
        accum = int(self.config.train.grad_accum_steps)
        loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        plugins = self.plugins
        # GPipe: the loss runs stage by stage over micro-batches, the gradients
        # on each stage's device (tfllm.distribute.pipeline_parallel).
        placed = distribute.placement(strategy)

        def per_example_loss(inputs, targets):
            if placed is not None:
                loss = placed.per_example_loss(task, model, inputs, targets, training=True)
                if loss is not None:
                    return loss
            for plugin in plugins:
                loss = plugin.per_example_loss(task, model, inputs, targets, training=True)
                if loss is not None:
                    return loss
            return task.per_example_loss(model, inputs, targets, training=True)

        def forward_backward(inputs, targets):
            with tf.GradientTape() as tape:
                per_example = per_example_loss(inputs, targets)
                # Scaled by the GLOBAL batch: summing over micro-batches and
                # replicas then gives exactly the mean over the whole batch.
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            grads = placed.gradients(scaled, train_variables) if placed is not None else None
            if grads is None:
                grads = tape.gradient(scaled, train_variables)
            # Embedding lookups give sparse IndexedSlices gradients; densify them so
            # accumulation, all-reduce, clipping and scaling treat every variable alike
            # (the tables here are small; a dense all-reduce is also simpler to fuse).
            return loss, [tf.convert_to_tensor(g) for g in grads]

        if self.config.runtime.jit_compile:
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def accumulated(inputs, targets):
            """Sums the gradients of `accum` micro-batches: the same update as one
            big batch, with 1/accum of the activation memory."""
            if accum == 1:
                return forward_backward(inputs, targets)
            micro_inputs = _split_batch(inputs, accum)
            micro_targets = _split_batch(targets, accum)
            loss = tf.constant(0.0)
            grads = [tf.zeros(v.shape, v.dtype) for v in train_variables]
            for i in tf.range(accum):
                micro_loss, micro_grads = forward_backward(micro_inputs[i], micro_targets[i])
                loss += micro_loss
                grads = [a + b for a, b in zip(grads, micro_grads, strict=True)]
            return loss, grads

        def replica_step(inputs, targets):
            loss, grads = accumulated(inputs, targets)
            ctx = tf.distribute.get_replica_context()
            # Reduce here (not in the optimizer) so clipping sees the true global norm.
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            # With loss scaling the gradients are scaled too: measure and clip the
            # true norm, and leave unscaling (and skipping overflowed steps) to Keras.
            scale = tf.cast(optimizer.dynamic_scale, tf.float32) if loss_scaling else 1.0
            scaled_norm = tf.linalg.global_norm(grads)
            if clip > 0:
                grads, _ = tf.clip_by_global_norm(grads, clip * scale, use_norm=scaled_norm)
            # Keras 3's TF optimizer sums the gradients over replicas again inside
            # `apply`; pre-dividing by the replica count makes that sum the identity.
            share = 1.0 / ctx.num_replicas_in_sync
            for (group_optimizer, variables), index in zip(groups, group_index, strict=True):
                group_optimizer.apply([grads[i] * share for i in index], variables)
            for plugin in plugins:
                plugin.after_update()
            return loss, scaled_norm / scale

        @tf.function
        def train_loop(iterator, num_steps):
            loss_sum = tf.constant(0.0)
            norm = tf.constant(0.0)
            for _ in tf.range(num_steps):
                inputs, targets = next(iterator)
                loss, replica_norm = strategy.run(replica_step, args=(inputs, targets))
                loss_sum += strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
                norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, replica_norm, axis=None)
            return loss_sum / tf.cast(num_steps, tf.float32), norm

        return train_loop

    # ------------------------------------------------------------- the loop
    def evaluate(self) -> dict[str, float]:
        """The task's eval metrics (at least `eval_loss`); {} without an eval split.

        Under parameter_server the chief evaluates itself (inline evaluation,
        reading the variables from the ps tasks) between scheduled loops.
        """
        strategy = tf.distribute.get_strategy() if self.coordinator else self.strategy
        return self.task.evaluate(self.model, strategy, self.global_batch)

    def _agree_to_stop(self, local: bool) -> bool:
        """Whether any worker was asked to stop (SIGTERM / Ctrl-C): all stop together.

        A preemption notice reaches one process; under multi_worker every
        worker must save the same step (the save is collective) and then exit,
        else the others hang in the next all-reduce. One all-reduce (SUM) of a
        0/1 flag per inner loop does that (what `PreemptionCheckpointHandler`
        does per step, without its own counter and restore logic, which would
        duplicate the loop's).
        """
        if not is_multi_worker(self.strategy):
            return local
        if self._stop_vote is None:
            strategy = self.strategy

            @tf.function
            def vote(flag):
                votes = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)

            self._stop_vote = vote
        return float(self._stop_vote(tf.constant(1.0 if local else 0.0))) > 0

    def _run_steps(self, iterator, num_steps: int) -> tuple[float, float]:
        """Runs `num_steps` optimizer steps; returns (mean loss, last grad norm)."""
        if self.coordinator is None:
            loss, norm = self._train_loop(iterator, tf.constant(num_steps, tf.int32))
            return float(loss), float(norm)
        return self._run_steps_on_workers(iterator, num_steps)

    def _run_steps_on_workers(self, iterator, num_steps: int) -> tuple[float, float]:
        """Schedules `num_steps` steps as closures over the workers, waits for all.

        Closures of a few steps keep every worker busy while amortising the
        scheduling round trip; a closure whose worker dies is re-run on another
        (ClusterCoordinator's fault tolerance). The optimizers' step counters
        are then set to the steps actually scheduled: Keras increments
        `iterations` by read-then-assign, which loses counts when workers
        update at once.
        """
        start = self.step
        workers = max(1, self.coordinator.strategy.extended._num_workers)  # noqa: SLF001
        chunk = max(1, num_steps // (2 * workers))
        scheduled: list[tuple[int, object]] = []
        done = 0
        while done < num_steps:
            k = min(chunk, num_steps - done)
            value = self.coordinator.schedule(
                self._train_loop, args=(iterator, tf.constant(k, tf.int32))
            )
            scheduled.append((k, value))
            done += k
        self.coordinator.join()
        results = [(k, value.fetch()) for k, value in scheduled]
        for optimizer, _ in self.param_groups:
            optimizer.iterations.assign(start + num_steps)
        loss = sum(k * float(value[0]) for k, value in results) / num_steps
        return loss, float(results[-1][1][1])

    def _learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)

    def train(self) -> dict:
        """Runs to `train.num_steps`, resuming if a checkpoint exists; returns final metrics."""
        if self.coordinator is None:
            return self._train()
        try:
            return self._train()
        except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
            # The coordinator absorbs worker failures; what reaches here is a
            # parameter server (or the chief's link to it) gone.
            message = str(getattr(e, "message", e))
            lost = sorted(set(re.findall(r"/job:ps/replica:\d+/task:\d+", message)))
            what = ", ".join(lost) or message.strip().splitlines()[0][:200]
            last = tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints"))
            raise ClusterFailure(
                f"the parameter-server cluster failed after step {self.last_step} "
                f"({type(e).__name__}: {what}); last checkpoint: {last or 'none yet'}. "
                "Restart the cluster and run the same command to resume."
            ) from None

    def _train(self) -> dict:
        cfg = self.config.train
        start = self.restore_or_initialize()
        total_steps = int(cfg.num_steps)
        metrics_path = os.path.join(self.workdir, "metrics.json")
        self._previous_metrics = read_json(metrics_path) if start else {}
        state = TrainState(
            history=read_json(os.path.join(self.workdir, "history.json")).get("history", [])
            if start
            else []
        )
        stopped_early = self._previous_metrics.get("early_stopped_at") == start
        # A run that early-stopped is finished, unless early stopping was since turned off.
        if start >= total_steps or (stopped_early and int(cfg.early_stopping_patience) > 0):
            print(f"Already trained to step {start} (num_steps={total_steps}); nothing to do.")
            return read_json(metrics_path)
        stopper = _EarlyStopping(
            int(cfg.early_stopping_patience), float(cfg.early_stopping_min_delta), state.history
        )

        writer = self._summary_writer("train")
        eval_writer = self._summary_writer("eval")
        if self.chief and start == 0:
            write_hparams(self.config, os.path.join(self.workdir, "tensorboard"))
        iterator = self._distributed_train_iterator(start)
        progress = self._progress = _Progress(total_steps, start, self.task.throughput_unit)
        last_eval: dict[str, float] = {}
        stats = None
        tokens_per_step = self.global_batch * self.task.tokens_per_example
        started = time.time()
        profiler = _ProfileWindow(
            list(self.config.runtime.get("profile_steps", [])),
            os.path.join(self.workdir, "tensorboard", "train"),
            self.chief,
        )
        with _StopSignal() as stop, profiler:
            while self.step < total_steps:
                step = self.last_step = self.step
                n = min(int(cfg.steps_per_loop), total_steps - step)
                # never run past an eval/checkpoint boundary inside one loop
                n = min(
                    n,
                    _to_boundary(step, int(cfg.eval_every)),
                    _to_boundary(step, int(cfg.checkpoint_every)),
                    profiler.steps_to_edge(step),
                )
                profiler.before(step)
                t0 = time.perf_counter()
                loss, norm = self._run_steps(iterator, n)
                elapsed = time.perf_counter() - t0
                self.last_step = step + n
                profiler.after(self.step)
                if not math.isfinite(loss):
                    last = self.manager.latest_checkpoint or "none"
                    raise NonFiniteLoss(
                        f"training loss became {loss} between steps {step} and {self.step}; "
                        f"stopped without saving (last good checkpoint: {last}). "
                        "Lower config.train.learning_rate or enable config.train.grad_clip_norm."
                    )
                stats = LoopStats(
                    self.step,
                    loss,
                    float(norm),
                    self._learning_rate(),
                    n * tokens_per_step / elapsed,
                    n * self.global_batch / elapsed,
                )
                state.tokens_per_second.append(stats.tokens_per_second)
                state.examples_per_second.append(stats.examples_per_second)
                self._write_train_summaries(writer, stats)
                progress.update(stats)
                record = {
                    "step": stats.step,
                    "loss": loss,
                    "grad_norm": stats.grad_norm,
                    "learning_rate": stats.learning_rate,
                    "tokens_per_second": stats.tokens_per_second,
                    "examples_per_second": stats.examples_per_second,
                }
                at_end = self.step >= total_steps
                if at_end or self.step % int(cfg.eval_every) == 0:
                    last_eval = self.evaluate()
                    record.update(last_eval)
                    self._write_eval_summaries(eval_writer, last_eval)
                    if cfg.get("weight_histograms", False):
                        self._write_weight_histograms(writer)
                state.history.append(record)
                if "eval_loss" in record and stopper.should_stop(record["eval_loss"]):
                    self._progress.note(stopper.reason(self.step))
                    self._previous_metrics["early_stopped_at"] = self.step
                    at_end = True
                stopping = self._agree_to_stop(stop.received is not None)
                if at_end or self.step % int(cfg.checkpoint_every) == 0 or stopping:
                    self._save(state, last_eval, stats, time.time() - started)
                if at_end:
                    break
                if stopping:
                    raise TrainingInterrupted(
                        f"interrupted at step {self.step}; checkpoint saved in "
                        f"{os.path.join(self.workdir, 'checkpoints')}. "
                        "Run the same command to resume."
                    )
        return self._final_metrics(state, last_eval, stats, time.time() - started)

    # ------------------------------------------------------------ outputs
    def _summary_writer(self, name: str):
        if not self.chief:
            return tf.summary.create_noop_writer()
        return tf.summary.create_file_writer(os.path.join(self.workdir, "tensorboard", name))

    def _write_train_summaries(self, writer, stats: LoopStats) -> None:
        with writer.as_default(step=stats.step):
            tf.summary.scalar("loss", stats.loss)
            for name, value in self.task.train_scalars(stats.loss).items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", stats.learning_rate)
            tf.summary.scalar("grad_norm", stats.grad_norm)
            tf.summary.scalar("tokens_per_second", stats.tokens_per_second)
            tf.summary.scalar("examples_per_second", stats.examples_per_second)
        writer.flush()

    def _write_eval_summaries(self, writer, results: dict[str, float]) -> None:
        samples = self.sample_fn(self.model, self.step) if (self.sample_fn and self.chief) else []
        with writer.as_default(step=self.step):
            for key, value in results.items():
                tf.summary.scalar(key.removeprefix("eval_"), value)
            if samples:
                text = "\n\n".join(f"```\n{s}\n```" for s in samples)
                tf.summary.text("samples", text)
        writer.flush()
        if results:
            self._progress.note(f"step {self.step}: {self.task.describe(results)}")

    def _write_weight_histograms(self, writer) -> None:
        """`weights/<layer>/<variable>` histograms in train/ (config.train.weight_histograms).

        Written at eval time, not every loop: each one reads every weight to the
        host (an all-gather under tensor parallelism), which costs a full copy
        of the model.
        """
        from tfllm.distribute.mesh import to_host

        with writer.as_default(step=self.step):
            for variable in self.model.trainable_variables:
                # Without the model's own name (`gpt_3/`): tags then match across runs.
                name = variable.path.split("/", 1)[-1]
                tf.summary.histogram(f"weights/{name}", to_host(variable))
        writer.flush()

    def _final_metrics(
        self, state: TrainState, last_eval: dict, stats: LoopStats | None, wall: float
    ) -> dict:
        metrics = dict(self._previous_metrics)
        metrics.update(
            {
                "step": self.step,
                "num_params": int(self.model.count_params()),
                "strategy": self.config.runtime.strategy,
                "replicas": self.strategy.num_replicas_in_sync,
                **({"sharded_variables": self.sharded} if self.sharded else {}),
            }
        )
        if stats is not None:
            metrics.update({"loss": stats.loss, "train_loss": stats.loss})
            metrics["train_wall_seconds"] = (
                self._previous_metrics.get("train_wall_seconds", 0.0) + wall
            )
        if state.tokens_per_second:
            # The first loop of a process includes tracing; leave it out when we can.
            steady = state.tokens_per_second[1:] or state.tokens_per_second
            metrics["tokens_per_second"] = statistics.median(steady)
            steady = state.examples_per_second[1:] or state.examples_per_second
            metrics["examples_per_second"] = statistics.median(steady)
        metrics.update(last_eval)
        for plugin in self.plugins:
            metrics.update(plugin.summary(self.model))
        return metrics

    def _save(self, state: TrainState, last_eval: dict, stats: LoopStats, wall: float) -> None:
        self.manager.save(checkpoint_number=self.step)
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
            return
        atomic_write_json(os.path.join(self.workdir, "history.json"), {"history": state.history})
        atomic_write_json(
            os.path.join(self.workdir, "metrics.json"),
            self._final_metrics(state, last_eval, stats, wall),
        )


class _ProfileWindow:
    """Traces optimizer steps start+1 .. stop with the TensorFlow profiler.

    `config.runtime.profile_steps=[start, stop]`; the trace lands in
    `W/tensorboard/train/plugins/profile/` for TensorBoard's Profile tab
    (`pip install tensorboard-plugin-profile`). Inner loops are cut at both
    edges so the trace holds exactly those steps; start after the first loop,
    which includes tracing. Only the chief profiles.
    """

    def __init__(self, steps: list[int], logdir: str, chief: bool) -> None:
        self.start, self.stop = (steps[0], steps[1]) if steps and chief else (-1, -1)
        self.logdir = logdir
        self.active = False

    def steps_to_edge(self, step: int) -> int:
        for edge in (self.start, self.stop):
            if step < edge:
                return edge - step
        return sys.maxsize

    def before(self, step: int) -> None:
        if step == self.start:
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def after(self, step: int) -> None:
        if self.active and step >= self.stop:
            tf.profiler.experimental.stop()
            self.active = False
            print(f"Profiled steps {self.start + 1}-{self.stop}: {self.logdir}", flush=True)

    def __enter__(self) -> _ProfileWindow:
        return self

    def __exit__(self, *exc) -> None:
        if self.active:  # stopped early (error, signal, early stopping): keep what was traced
            tf.profiler.experimental.stop()
            self.active = False


class _EarlyStopping:
    """Stops after `patience` evals whose loss did not beat the best by `min_delta`.

    Its state is rebuilt from the run's history, so a resumed run keeps counting.
    """

    def __init__(self, patience: int, min_delta: float, history: list[dict]) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_evals = 0
        for record in history:
            if "eval_loss" in record:
                self._update(record["eval_loss"])

    def _update(self, loss: float) -> None:
        if loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
        else:
            self.bad_evals += 1

    def should_stop(self, loss: float) -> bool:
        self._update(loss)
        return self.patience > 0 and self.bad_evals >= self.patience

    def reason(self, step: int) -> str:
        return (
            f"Early stopping at step {step}: eval loss has not improved on "
            f"{self.best:.4f} for {self.bad_evals} evaluations"
        )


class _Progress:
    """Keras' Progbar on a terminal; one plain line per loop in logs and pipes
    (Progbar's in-place redraw turns into one unreadable line there)."""

    def __init__(self, total_steps: int, start: int, unit: str = "tokens") -> None:
        self.total = total_steps
        self.unit = unit
        self.short = "tok/s" if unit == "tokens" else "ex/s"
        self.bar = None
        if sys.stdout.isatty():
            self.bar = keras.utils.Progbar(total_steps, stateful_metrics=["loss", self.short, "lr"])
            self.bar.update(start)

    def note(self, message: str) -> None:
        """A line of its own, below the bar on a terminal."""
        print(("\n" if self.bar is not None else "") + message, flush=True)

    def update(self, stats: LoopStats) -> None:
        rate = stats.tokens_per_second if self.unit == "tokens" else stats.examples_per_second
        if self.bar is not None:
            self.bar.update(
                stats.step,
                values=[
                    ("loss", stats.loss),
                    (self.short, round(rate)),
                    ("lr", stats.learning_rate),
                ],
            )
            return
        print(
            f"step {stats.step}/{self.total}  loss {stats.loss:.4f}  "
            f"grad_norm {stats.grad_norm:.3f}  lr {stats.learning_rate:.3g}  "
            f"{rate:,.0f} {self.unit}/s",
            flush=True,
        )


def _split_batch(batch: tf.Tensor, parts: int) -> tf.Tensor:
    """[B, ...] -> [parts, B / parts, ...] for gradient accumulation."""
    shape = tf.shape(batch)
    return tf.reshape(batch, tf.concat([[parts, shape[0] // parts], shape[1:]], axis=0))


def _to_boundary(step: int, every: int) -> int:
    """Steps from `step` to the next multiple of `every`."""
    return every - step % every


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
