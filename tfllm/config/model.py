"""Schemas of `config.model`: the keys every family reads, then one section per family.

`config.model` stays one flat ConfigDict (users write `--config.model.num_layers=4`
whatever the family, and config.json files of earlier runs are flat), but its
keys are declared here by the family that reads them, and `MODEL_FAMILIES`
says which sections make up each `config.model.name`. A new family adds a
schema and a row there; the keys, defaults and checks follow from it.

Every family's keys are validated whichever family is active, as they always
were: a ConfigDict carries them all, and a typo in one (say
`--config.model.pooling=max` on a CNN run) is still a typo worth a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfllm.config.fields import (
    defaults,
    fraction,
    interval,
    one_of,
    positive,
    positive_ints,
    setting,
)
from tfllm.config.names import ACTIVATIONS, CNN_POOLINGS, MODEL_NAMES, POOLINGS


@dataclass(frozen=True)
class ModelCommon:
    """Keys every family reads: which model, how long a sequence, how much dropout."""

    name: str = setting("gpt", one_of(MODEL_NAMES))
    max_length: int = setting(128, interval(2, 65536))
    dropout: float = setting(0.1, fraction())


@dataclass(frozen=True)
class GPTConfig:
    """The GPT's transformer stack; the transformer classifier reuses these blocks."""

    num_layers: int = setting(4, positive())
    num_heads: int = setting(4, positive())
    hidden_dim: int = setting(128, positive())
    intermediate_dim: int = setting(512, positive())


@dataclass(frozen=True)
class BlockMathConfig:
    """The block details published checkpoints differ in (GPT-2: tanh GELU; BERT: eps 1e-12)."""

    activation: str = setting("gelu", one_of(ACTIVATIONS))  # gelu (exact) | gelu_approximate …
    layer_norm_epsilon: float = setting(1e-5, interval(0.0, 1.0, lo_open=True))


@dataclass(frozen=True)
class LlamaConfig:
    """Llama's attention and position details (transformers' LlamaConfig, renamed)."""

    num_kv_heads: int = setting(0, interval(0, 4096))  # 0: as many as num_heads
    head_dim: int = setting(0, interval(0, 4096))  # 0: hidden_dim // num_heads
    rope_theta: float = setting(10000.0, positive())
    rope_scaling_factor: float = setting(0.0, interval(0.0, 1e6))  # 0: plain RoPE; >0: llama3
    rope_low_freq_factor: float = setting(1.0, positive())
    rope_high_freq_factor: float = setting(4.0, positive())
    rope_original_max_length: int = setting(8192, positive())
    tie_embeddings: bool = setting(True)
    context_length: int = setting(0, interval(0, 10_000_000))  # trained context; 0: max_length


@dataclass(frozen=True)
class BertConfig:
    """BERT's segment (token type) embeddings."""

    type_vocab_size: int = setting(2, positive())


@dataclass(frozen=True)
class PoolingConfig:
    """How a transformer classifier (tfllm's or BERT's) turns token states into one vector."""

    pooling: str = setting("mean", one_of(POOLINGS))  # mean | cls (bos) | last (last real token)


@dataclass(frozen=True)
class TransformerClassifierConfig:
    """The attention mask of tfllm's transformer classifier."""

    causal: bool = setting(False)  # keep the causal mask (e.g. when fine-tuning a GPT)


@dataclass(frozen=True)
class EmbeddingConfig:
    """The token embedding width of the non-transformer classifiers (CNN and MLP)."""

    embedding_dim: int = setting(128, positive())


@dataclass(frozen=True)
class CNNConfig:
    """Kim (2014) text CNN: parallel Conv1D widths, then pooling."""

    # Tuples: overridable as --config.model.conv_widths="(3, 4)".
    conv_widths: tuple[int, ...] = setting(
        (3, 4, 5), positive_ints("a non-empty list of positive integers", non_empty=True)
    )
    conv_filters: int = setting(100, positive())
    cnn_pooling: str = setting("global_max", one_of(CNN_POOLINGS))  # | max_pool_flatten
    pool_size: int = setting(2, positive())  # max_pool_flatten only


@dataclass(frozen=True)
class MLPConfig:
    """Mean of embeddings, then dense layers of these widths."""

    mlp_hidden_dims: tuple[int, ...] = setting(
        (256, 256), positive_ints("a list of positive integers")
    )


MODEL_FAMILIES: dict[str, tuple[type, ...]] = {
    "gpt": (ModelCommon, GPTConfig, BlockMathConfig),
    "transformer_classifier": (ModelCommon, GPTConfig, PoolingConfig, TransformerClassifierConfig),
    "cnn_classifier": (ModelCommon, EmbeddingConfig, CNNConfig),
    "mlp_classifier": (ModelCommon, EmbeddingConfig, MLPConfig),
    "llama": (ModelCommon, GPTConfig, BlockMathConfig, LlamaConfig),
    "bert": (ModelCommon, GPTConfig, BlockMathConfig, BertConfig),
    "bert_classifier": (ModelCommon, GPTConfig, BlockMathConfig, BertConfig, PoolingConfig),
    "llama_classifier": (ModelCommon, GPTConfig, BlockMathConfig, LlamaConfig, PoolingConfig),
}
assert tuple(MODEL_FAMILIES) == MODEL_NAMES, "every model name needs a family row"

# Every section of config.model once, in the order validate checks them.
MODEL_SCHEMAS: tuple[type, ...] = tuple(
    dict.fromkeys(schema for family in MODEL_FAMILIES.values() for schema in family)
)


def family_keys(name: str) -> tuple[str, ...]:
    """The `config.model` keys the family `name` reads (KeyError for an unknown name)."""
    return tuple(key for schema in MODEL_FAMILIES[name] for key in defaults(schema))
