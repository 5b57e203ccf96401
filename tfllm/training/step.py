"""The training step: what runs on every replica inside the loop's `tf.function`.

One optimizer step is forward and backward on each replica (micro-batch by
micro-batch under gradient accumulation), one all-reduce of the gradients,
clipping by their true global norm (loss scaling undone for the measurement),
and an update per optimizer group; plugins may replace the loss and act after
each update. `make_train_loop` wraps `steps_per_loop` such steps in one
`tf.function` (the Orbit-style inner loop). Kept apart from the controller
(`tfllm.training.controller`) because this is the only part that is traced:
everything here must be graph-safe, nothing in the controller need be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import keras
import ml_collections
import tensorflow as tf

from tfllm import distribute
from tfllm.distribute.ps_sharding import expand_sharded, shards_of
from tfllm.errors import ConfigError
from tfllm.training.optim import create_optimizer
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.tasks import Task

ParamGroups = list[tuple[keras.optimizers.Optimizer, list]]
TrainLoop = Callable[[Iterator, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


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


def create_param_groups(config: ml_collections.ConfigDict, model: keras.Model) -> ParamGroups:
    """One (optimizer, variables) group, or two when the backbone learns slower.

    Keras optimizers have one learning rate, and Adam-style updates ignore a
    constant gradient scale, so a lower backbone rate (ULMFiT's
    discriminative fine-tuning) needs its own optimizer over the backbone's
    variables with a scaled schedule. Call under the strategy's scope.
    """
    groups = _optimizer_groups(config, model)
    for optimizer, variables in groups:
        # Weight-decay exclusions name the Keras variable; its shards inherit them.
        for variable in variables:
            shards = shards_of(variable)
            if shards and not optimizer._use_weight_decay(variable):  # noqa: SLF001
                optimizer.exclude_from_weight_decay(var_list=shards)
    return [(optimizer, expand_sharded(variables)) for optimizer, variables in groups]


def _optimizer_groups(config: ml_collections.ConfigDict, model: keras.Model) -> ParamGroups:
    train = config.train
    precision = config.runtime.precision
    variables = list(model.trainable_variables)
    scale = float(train.get("backbone_lr_scale", 1.0))
    backbone = getattr(model, "backbone_layers", None)
    if scale == 1.0 or backbone is None:
        return [(create_optimizer(train, model, precision), variables)]
    if precision == "mixed_float16":
        raise ConfigError(
            "config.train.backbone_lr_scale: a separate backbone learning rate needs one "
            "loss scale per optimizer; use precision mixed_bfloat16 or float32 with it"
        )
    backbone_ids = {id(v) for layer in backbone() for v in layer.trainable_variables}
    head = [v for v in variables if id(v) not in backbone_ids]
    body = [v for v in variables if id(v) in backbone_ids]
    if not body:  # everything in the backbone is frozen
        return [(create_optimizer(train, model, precision), variables)]
    scaled = ml_collections.ConfigDict(train.to_dict())
    scaled.learning_rate = float(train.learning_rate) * scale
    return [
        (create_optimizer(train, model, precision), head),
        (create_optimizer(scaled, model, precision), body),
    ]


def make_train_loop(
    config: ml_collections.ConfigDict,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    task: Task,
    param_groups: ParamGroups,
    train_variables: Sequence[tf.Variable],
    plugins: Sequence[TrainingPlugin] = (),
    stop: tf.Variable | None = None,
) -> TrainLoop:
    """`train_loop(iterator, num_steps) -> (mean loss, last grad norm)`, a `tf.function`.

    `param_groups[0]`'s optimizer is the step counter and holds the loss scale.
    `stop` (`tfllm.training.signals.stop_flag`), when given, is read after every
    step: once a signal sets it, the loop ends early (at least one step runs)
    and the mean loss is over the steps it ran.
    """
    optimizer = param_groups[0][0]
    groups = param_groups
    # Where each group's variables sit in train_variables.
    position = {id(v): i for i, v in enumerate(train_variables)}
    group_index = [[position[id(v)] for v in variables] for _, variables in groups]
    global_batch = int(config.train.batch_size)
    clip = float(config.train.grad_clip_norm)
    accum = int(config.train.grad_accum_steps)
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    plugins = tuple(plugins)
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

    if config.runtime.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def accumulated(inputs, targets):
        """Sums the gradients of `accum` micro-batches: the same update as one
        big batch, with 1/accum of the activation memory."""
        if accum == 1:
            return forward_backward(inputs, targets)
        micro_inputs = split_batch(inputs, accum)
        micro_targets = split_batch(targets, accum)
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
        ran = tf.constant(0)
        for _ in tf.range(num_steps):
            inputs, targets = next(iterator)
            loss, replica_norm = strategy.run(replica_step, args=(inputs, targets))
            loss_sum += strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, replica_norm, axis=None)
            ran += 1
            if stop is not None and stop.read_value():  # set by a signal (signals.StopSignal)
                break
        return loss_sum / tf.cast(ran, tf.float32), norm

    return train_loop


def split_batch(batch: tf.Tensor, parts: int) -> tf.Tensor:
    """[B, ...] -> [parts, B / parts, ...] for gradient accumulation."""
    shape = tf.shape(batch)
    return tf.reshape(batch, tf.concat([[parts, shape[0] // parts], shape[1:]], axis=0))
