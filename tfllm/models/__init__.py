"""Model construction from an `ml_collections` model config."""

from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from tfllm.config import MODEL_NAMES
from tfllm.errors import ConfigError
from tfllm.models.classifier import TransformerClassifier
from tfllm.models.cnn import CNNClassifier
from tfllm.models.gpt import GPT
from tfllm.models.mlp import MLPClassifier

AVAILABLE = MODEL_NAMES  # defined once, in tfllm.config

__all__ = [
    "AVAILABLE",
    "CNNClassifier",
    "GPT",
    "MLPClassifier",
    "TransformerClassifier",
    "build_model",
]


def build_model(
    model_config: ml_collections.ConfigDict, vocab_size: int, num_classes: int | None = None
) -> keras.Model:
    """Build the model `model_config.name` names, with its variables created.

    The model is called once on a dummy batch so checkpoints can be restored
    into it and `count_params()` works before training starts. Classifiers
    need `num_classes` (>= 2); the LM ignores it. Keys a config predating the
    classifiers lacks take the classes' defaults (`model_config.get`).
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
    if name not in AVAILABLE:
        raise ConfigError(
            f"config.model.name: unknown model {name!r} (available: {', '.join(AVAILABLE)})"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            f"config.model.name={name!r} is a classifier and needs num_classes >= 2 "
            f"(the number of labels), got {num_classes!r}"
        )
    get = model_config.get
    max_length = model_config.max_length
    try:
        if name == "transformer_classifier":
            model = TransformerClassifier(
                vocab_size=vocab_size,
                num_classes=num_classes,
                max_length=max_length,
                num_layers=model_config.num_layers,
                num_heads=model_config.num_heads,
                hidden_dim=model_config.hidden_dim,
                intermediate_dim=model_config.intermediate_dim,
                dropout=get("dropout", 0.1),
                pooling=get("pooling", "mean"),
                causal=get("causal", False),
            )
        elif name == "cnn_classifier":
            model = CNNClassifier(
                vocab_size=vocab_size,
                num_classes=num_classes,
                max_length=max_length,
                embedding_dim=get("embedding_dim", 128),
                conv_widths=list(get("conv_widths", [3, 4, 5])),
                conv_filters=get("conv_filters", 100),
                pooling=get("cnn_pooling", "global_max"),
                pool_size=get("pool_size", 2),
                dropout=get("dropout", 0.5),
            )
        else:
            model = MLPClassifier(
                vocab_size=vocab_size,
                num_classes=num_classes,
                max_length=max_length,
                embedding_dim=get("embedding_dim", 128),
                hidden_dims=list(get("mlp_hidden_dims", [256, 256])),
                dropout=get("dropout", 0.1),
            )
    except ValueError as e:
        raise ConfigError(f"config.model ({name}): {e}") from None
    model(tf.zeros([1, max_length], tf.int32))
    return model
