"""Training-step speed: forward, sparse CE, gradients and `optimizer.apply`.

The step mirrors `tfllm.training.step` on the default strategy (one
replica, no gradient accumulation): the same loss function, the same global
norm clipping, the same optional XLA for forward/backward, one `tf.function`
per step. The same step code drives the keras-hub peer, so a speed difference
comes from the models, not from the loop around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import ml_collections
import tensorflow as tf

from tfllm.evaluation.predict import token_cross_entropy
from tfllm.models import build_model
from tfllm.training.optim import no_decay_variables


def random_tokens(batch: int, length: int, vocab_size: int, seed: int) -> tf.Tensor:
    """Deterministic random ids `[batch, length]`: speed does not depend on the text."""
    return tf.random.stateless_uniform(
        [batch, length], seed=(seed, 0), minval=0, maxval=vocab_size, dtype=tf.int32
    )


def make_optimizer(
    train: ml_collections.ConfigDict, model: keras.Model, precision: str = "float32"
) -> keras.optimizers.Optimizer:
    """Keras AdamW with the config's hyper-parameters and a constant learning rate.

    As the trainer builds it (`tfllm.training.optim.create_optimizer`): the
    same weight-decay exclusions (LayerNorm scales/shifts, biases, position
    embeddings; chosen by variable path, so they apply to the keras-hub peer
    too), and under `mixed_float16` Keras' `LossScaleOptimizer`, so a float16
    timing pays for the loss scaling a real float16 run needs.

    A schedule would add a few scalar ops per step; both sides get the same
    optimizer so that it cancels out of the comparison anyway.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=float(train.learning_rate),
        weight_decay=float(train.weight_decay),
        beta_1=float(train.beta_1),
        beta_2=float(train.beta_2),
    )
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    clip_norm: float,
    jit_compile: bool,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """One training step as a `tf.function`, built as the trainer builds it
    (loss scaling and clipping of the scaled gradients included)."""
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(inputs: tf.Tensor, targets: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = tf.reduce_mean(token_cross_entropy(targets, logits))
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        return loss, tape.gradient(scaled, model.trainable_variables)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    @tf.function
    def train_step(inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        loss, grads = forward_backward(inputs, targets)
        if clip_norm > 0:
            scale = tf.cast(optimizer.dynamic_scale, tf.float32) if loss_scaling else 1.0
            grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return train_step


class TrainBench:
    """Times single training steps of `model` on one fixed random batch."""

    def __init__(self, name: str, model: keras.Model, config: ml_collections.ConfigDict) -> None:
        self.name = name
        self.model = model
        batch = int(config.train.batch_size)
        seq_len = int(config.model.max_length)
        vocab = int(config.tokenizer.vocab_size)
        self.tokens_per_step = batch * seq_len
        # One fixed batch: the input pipeline is not what is being measured.
        self.inputs = random_tokens(batch, seq_len, vocab, seed=1)
        self.targets = random_tokens(batch, seq_len, vocab, seed=2)
        self.optimizer = make_optimizer(config.train, model, str(config.runtime.precision))
        self.optimizer.build(model.trainable_variables)
        self.step = make_train_step(
            model,
            self.optimizer,
            float(config.train.grad_clip_norm),
            bool(config.runtime.jit_compile),
        )

    def run_once(self) -> float:
        """One step; `.numpy()` on the loss waits until the update has run."""
        start = time.perf_counter()
        self.step(self.inputs, self.targets).numpy()
        return time.perf_counter() - start


def build_ours(config: ml_collections.ConfigDict) -> keras.Model:
    """Our GPT at the config's dimensions, variables created."""
    return build_model(config.model, int(config.tokenizer.vocab_size))
