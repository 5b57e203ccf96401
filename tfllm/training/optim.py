"""Optimizers and learning-rate schedules, all from Keras.

Keras gives the optimizers (SGD, Adam, AdamW, Adamax) and the warmup + cosine
schedule; this module only maps config names onto them and keeps weight decay
off LayerNorm scales, biases and position embeddings (decoupled decay on those
hurts, as in GPT-2/nanoGPT).
"""

from __future__ import annotations

import keras
import ml_collections

from tfllm.distribute.mesh import on_mesh
from tfllm.distribute.mesh_optim import MeshAdamW
from tfllm.errors import ConfigError

_NO_DECAY_NAMES = ("bias", "gamma", "beta")  # biases and LayerNorm scale/shift
_NO_DECAY_LAYERS = ("position_embedding",)


def no_decay_variables(model: keras.Model) -> list:
    """Variables AdamW must not decay, chosen by their path.

    Keras' `exclude_from_weight_decay(var_names=...)` matches only a variable's
    short name ("embeddings"), which cannot tell position from token embeddings,
    so we pass the variables themselves.
    """
    return [
        v
        for v in model.trainable_variables
        if v.path.rsplit("/", 1)[-1] in _NO_DECAY_NAMES
        or any(layer in v.path for layer in _NO_DECAY_LAYERS)
    ]


def learning_rate_schedule(train: ml_collections.ConfigDict):
    """Linear warmup to `learning_rate`, then cosine / linear decay or constant."""
    peak = float(train.learning_rate)
    warmup = int(train.warmup_steps)
    decay_steps = max(1, int(train.num_steps) - warmup)
    floor = peak * float(train.min_lr_ratio)
    if train.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak,
            decay_steps=decay_steps,
            alpha=float(train.min_lr_ratio),
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    if train.lr_schedule == "linear":
        decay = keras.optimizers.schedules.PolynomialDecay(peak, decay_steps, floor, power=1.0)
        return _WarmupThen(peak, warmup, decay) if warmup else decay
    if train.lr_schedule == "step":
        decay = keras.optimizers.schedules.ExponentialDecay(
            peak, int(train.lr_step_every), float(train.lr_step_gamma), staircase=True
        )
        return _WarmupThen(peak, warmup, decay) if warmup else decay
    if train.lr_schedule == "inverse_sqrt":
        return _InverseSqrt(peak, warmup)
    if train.lr_schedule == "constant":
        return _WarmupThen(peak, warmup, None) if warmup else peak
    raise ConfigError(f"config.train.lr_schedule: unknown schedule {train.lr_schedule!r}")


@keras.saving.register_keras_serializable(package="tfllm")
class _WarmupThen(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then `after` (offset by the warmup) or a constant peak.

    Keras' CosineDecay has warmup built in; its linear/constant schedules do not.
    """

    def __init__(self, peak: float, warmup_steps: int, after=None):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.after = after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / float(max(1, self.warmup_steps))
        later = (
            self.after(step - self.warmup_steps)
            if self.after is not None
            else keras.ops.convert_to_tensor(self.peak, "float32")
        )
        return keras.ops.where(step < self.warmup_steps, warm, later)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "after": keras.saving.serialize_keras_object(self.after),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfllm")
class _InverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then peak·sqrt(warmup/step) ("Attention is all you
    need"); Keras has inverse-time decay but not this inverse-square-root form."""

    def __init__(self, peak: float, warmup_steps: int):
        self.peak = peak
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32") + 1.0
        warmup = float(max(1, self.warmup_steps))
        return self.peak * keras.ops.minimum(step / warmup, keras.ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def create_optimizer(
    train: ml_collections.ConfigDict, model: keras.Model, precision: str = "float32"
) -> keras.optimizers.Optimizer:
    """The optimizer named by `train.optimizer`.

    Gradient clipping is NOT delegated to Keras (`global_clipnorm`): inside
    `strategy.run` Keras clips each replica's partial gradient before its
    all-reduce, which is not the global norm. The trainer clips instead.
    """
    lr = learning_rate_schedule(train)
    name = train.optimizer
    if name == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=float(train.momentum))
    elif name == "adam" and on_mesh(model):  # Adam is AdamW without decay
        optimizer = MeshAdamW(lr, weight_decay=0.0, beta_1=train.beta_1, beta_2=train.beta_2)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(lr, beta_1=train.beta_1, beta_2=train.beta_2)
    elif name == "adamax":
        optimizer = keras.optimizers.Adamax(lr, beta_1=train.beta_1, beta_2=train.beta_2)
    elif name == "adamw":
        adamw = MeshAdamW if on_mesh(model) else keras.optimizers.AdamW
        optimizer = adamw(
            lr, weight_decay=float(train.weight_decay), beta_1=train.beta_1, beta_2=train.beta_2
        )
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    else:
        raise ConfigError(f"config.train.optimizer: unknown optimizer {name!r}")
    if precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; Keras' dynamic scaler
        # also skips steps whose scaled gradients overflow.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
