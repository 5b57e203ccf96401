"""Model construction from an `ml_collections` model config."""

from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from tfllm.config import MODEL_NAMES
from tfllm.errors import ConfigError
from tfllm.models.bert import BertEncoder
from tfllm.models.bert_classifier import BertClassifier
from tfllm.models.classifier import TransformerClassifier
from tfllm.models.cnn import CNNClassifier
from tfllm.models.gpt import GPT
from tfllm.models.llama import Llama
from tfllm.models.llama_classifier import LlamaClassifier
from tfllm.models.mlp import MLPClassifier

AVAILABLE = MODEL_NAMES  # defined once, in tfllm.config

__all__ = [
    "AVAILABLE",
    "BertClassifier",
    "BertEncoder",
    "CNNClassifier",
    "GPT",
    "Llama",
    "LlamaClassifier",
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
            layer_norm_epsilon=model_config.get("layer_norm_epsilon", 1e-5),
            activation=model_config.get("activation", "gelu"),
        )
        model(tf.zeros([1, model_config.max_length], tf.int32))
        return model
    if name in ("llama", "bert"):
        return _build_imported_family(model_config, vocab_size)
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
        elif name == "bert_classifier":
            model = BertClassifier(
                vocab_size=vocab_size,
                num_classes=num_classes,
                max_length=max_length,
                num_layers=model_config.num_layers,
                num_heads=model_config.num_heads,
                hidden_dim=model_config.hidden_dim,
                intermediate_dim=model_config.intermediate_dim,
                type_vocab_size=get("type_vocab_size", 2),
                layer_norm_epsilon=get("layer_norm_epsilon", 1e-12),
                activation=get("activation", "gelu"),
                dropout=get("dropout", 0.1),
                pooling=get("pooling", "cls"),
            )
        elif name == "llama_classifier":
            model = LlamaClassifier(
                vocab_size=vocab_size,
                num_classes=num_classes,
                max_length=max_length,
                num_layers=model_config.num_layers,
                num_heads=model_config.num_heads,
                hidden_dim=model_config.hidden_dim,
                intermediate_dim=model_config.intermediate_dim,
                dropout=get("dropout", 0.0),
                pooling=get("pooling", "last"),
                **_llama_arguments(model_config),
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


def _build_imported_family(model_config: ml_collections.ConfigDict, vocab_size: int) -> keras.Model:
    """The families published checkpoints bring (llama, bert), built on a short dummy batch.

    Their `max_length` is the context (8,192 for SmolLM2), so a dummy batch of
    that length would run full attention over it only to create the variables.
    """
    get = model_config.get
    common = dict(
        vocab_size=vocab_size,
        max_length=model_config.max_length,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        hidden_dim=model_config.hidden_dim,
        intermediate_dim=model_config.intermediate_dim,
        dropout=model_config.dropout,
    )
    try:
        if model_config.name == "llama":
            model = Llama(**common, **_llama_arguments(model_config))
        else:
            model = BertEncoder(
                **common,
                type_vocab_size=get("type_vocab_size", 2),
                layer_norm_epsilon=get("layer_norm_epsilon", 1e-12),
                activation=get("activation", "gelu"),
            )
    except ValueError as e:
        raise ConfigError(f"config.model ({model_config.name}): {e}") from None
    model(tf.zeros([1, min(8, model_config.max_length)], tf.int32))
    return model


def _llama_arguments(model_config: ml_collections.ConfigDict) -> dict:
    """The arguments `Llama` and `LlamaClassifier` take beyond the common transformer shape."""
    get = model_config.get
    return dict(
        num_kv_heads=get("num_kv_heads", 0),
        head_dim=get("head_dim", 0),
        rope_theta=get("rope_theta", 10000.0),
        rope_scaling=(
            get("rope_scaling_factor", 0.0),
            get("rope_low_freq_factor", 1.0),
            get("rope_high_freq_factor", 4.0),
            get("rope_original_max_length", 8192),
        ),
        norm_epsilon=get("layer_norm_epsilon", 1e-5),
        tie_embeddings=get("tie_embeddings", True),
    )
