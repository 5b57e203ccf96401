"""Model construction from an `ml_collections` model config."""

from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from tfllm.errors import ConfigError
from tfllm.models.gpt import GPT

AVAILABLE = ("gpt",)

__all__ = ["AVAILABLE", "GPT", "build_model"]


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int) -> keras.Model:
    """Build the model `model_config.name` names, with its variables created.

    The model is called once on a dummy batch so checkpoints can be restored
    into it and `count_params()` works before training starts.
    """
    name = model_config.name
    if name == "gpt":
        if model_config.hidden_dim % model_config.num_heads:
            raise ConfigError(
                f"config.model.hidden_dim ({model_config.hidden_dim}) must be "
                f"divisible by config.model.num_heads ({model_config.num_heads})"
            )
        model = GPT(
            vocab_size=vocab_size,
            max_length=model_config.max_length,
            num_layers=model_config.num_layers,
            num_heads=model_config.num_heads,
            hidden_dim=model_config.hidden_dim,
            intermediate_dim=model_config.intermediate_dim,
            dropout=model_config.dropout,
        )
        model(tf.zeros([1, model_config.max_length], tf.int32))
        return model
    raise ConfigError(
        f"config.model.name: unknown model {name!r} (available: {', '.join(AVAILABLE)})"
    )
