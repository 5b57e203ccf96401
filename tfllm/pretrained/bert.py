"""The bert family's name map: Hugging Face `BertModel` <-> `tfllm.models.bert.BertEncoder`.

One table (`_entries`) pairs every HF tensor with the Keras variable it fills
and how its layout changes: `nn.Linear` weights are [out, in] where Keras
kernels are [in, out], and the attention projections are EinsumDense kernels
([d, heads, head_dim] for query/key/value, [heads, head_dim, d] for the
output). `load_into` reads the table one way and `to_hf` the other, so an
import and an export cannot disagree.

Checkpoints of `BertForPreTraining` / `BertForMaskedLM` carry a `bert.`
prefix and pretraining heads (`cls.*`); the heads are not part of an encoder
and are skipped. Any other tensor the table does not read is an error: a
leftover weight means the architecture is not the one mapped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.errors import DataError
from tfllm.models.bert import BertEncoder
from tfllm.pretrained.source import SourceCheckpoint, strip_prefix
from tfllm.pretrained.weights import assign, check_all_used

# HF `hidden_act` -> BertEncoder activation.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "relu": "relu",
}
ACTIVATIONS_BACK = {"gelu": "gelu", "gelu_approximate": "gelu_new", "relu": "relu"}
# A buffer older checkpoints saved (positions are computed, not read).
IGNORABLE = ("embeddings.position_ids",)
# Pretraining heads (masked LM, next sentence): not part of the encoder.
HEAD_PREFIXES = ("cls.",)
POOLER = ("pooler.dense.weight", "pooler.dense.bias")


def model_config(source: SourceCheckpoint) -> dict[str, Any]:
    """`config.model` (name "bert") for the checkpoint; one line naming a key tfllm cannot take."""
    config = source.config
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise DataError(
            f"{source.origin}: config key 'hidden_act' is {act!r} "
            f"(supported: {', '.join(ACTIVATIONS)})"
        )
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise DataError(
            f"{source.origin}: config key 'position_embedding_type' is {position!r} "
            "(supported: absolute)"
        )
    for key in ("is_decoder", "add_cross_attention"):
        if config.get(key):
            raise DataError(f"{source.origin}: config key {key!r} is true; not supported")
    hidden = int(source.require("hidden_size"))
    heads = int(source.require("num_attention_heads"))
    if hidden % heads:
        raise DataError(
            f"{source.origin}: config key 'hidden_size' ({hidden}) is not divisible by "
            f"'num_attention_heads' ({heads})"
        )
    return {
        "name": "bert",
        "max_length": int(source.require("max_position_embeddings")),
        "num_layers": int(source.require("num_hidden_layers")),
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": int(source.require("intermediate_size")),
        "type_vocab_size": int(config.get("type_vocab_size", 2)),
        "layer_norm_epsilon": float(config.get("layer_norm_eps", 1e-12)),
        "activation": ACTIVATIONS[act],
        "dropout": 0.0,
    }


def vocab_size(source: SourceCheckpoint) -> int:
    """Rows of the word embedding (what the tokenizer's vocabulary must match)."""
    return int(_view(source).take("embeddings.word_embeddings.weight").shape[0])


def _view(source: SourceCheckpoint) -> SourceCheckpoint:
    tensors = strip_prefix(source.tensors, ("bert.",))
    return SourceCheckpoint(source.family, source.config, tensors, source.origin)


@dataclass(frozen=True)
class _Entry:
    """One HF tensor: its name and shape, the variable it fills, and whether it is
    a Linear weight (transposed, then reshaped to the variable's shape)."""

    name: str
    shape: tuple[int, ...]
    variable: Any
    linear: bool = False


def _entries(model: BertEncoder) -> list[_Entry]:
    """Every HF BertModel tensor (names without a `bert.` prefix), in checkpoint order."""
    d, f = model.hidden_dim, model.intermediate_dim
    e = [
        _Entry("embeddings.word_embeddings.weight", (model.vocab_size, d),
               model.token_embedding.embeddings),
        _Entry("embeddings.position_embeddings.weight", (model.max_length, d),
               model.position_embedding.position_embeddings),
        _Entry("embeddings.token_type_embeddings.weight", (model.type_vocab_size, d),
               model.segment_embedding.embeddings),
        _Entry("embeddings.LayerNorm.weight", (d,), model.embedding_norm.gamma),
        _Entry("embeddings.LayerNorm.bias", (d,), model.embedding_norm.beta),
    ]  # fmt: skip
    for i, block in enumerate(model.blocks):
        p = f"encoder.layer.{i}."
        attention = block._self_attention_layer
        for part, dense in (
            ("query", attention._query_dense),
            ("key", attention._key_dense),
            ("value", attention._value_dense),
        ):
            e.append(_Entry(f"{p}attention.self.{part}.weight", (d, d), dense.kernel, True))
            e.append(_Entry(f"{p}attention.self.{part}.bias", (d,), dense.bias))
        dense_norm = [
            ("attention.output", attention._output_dense, block._self_attention_layer_norm, d, d),
            ("intermediate", block._feedforward_intermediate_dense, None, f, d),
            ("output", block._feedforward_output_dense, block._feedforward_layer_norm, d, f),
        ]
        for name, dense, norm, out_dim, in_dim in dense_norm:
            e.append(_Entry(f"{p}{name}.dense.weight", (out_dim, in_dim), dense.kernel, True))
            e.append(_Entry(f"{p}{name}.dense.bias", (out_dim,), dense.bias))
            if norm is not None:
                e.append(_Entry(f"{p}{name}.LayerNorm.weight", (d,), norm.gamma))
                e.append(_Entry(f"{p}{name}.LayerNorm.bias", (d,), norm.beta))
    e.append(_Entry(POOLER[0], (d, d), model.pooler.kernel, True))
    e.append(_Entry(POOLER[1], (d,), model.pooler.bias))
    return e


def _built(model: BertEncoder) -> None:
    if not model.built:
        model(tf.zeros([1, 2], tf.int32))


def load_into(model: BertEncoder, source: SourceCheckpoint) -> None:
    """Copies every BERT tensor into `model`; one line for a missing, misshapen or unused one.

    A checkpoint saved without its pooler (`add_pooling_layer=False`) imports
    with a zero pooler, so `pooled_output` is then all zeros; the hidden
    states and sentence embeddings do not use it.
    """
    _built(model)
    view = _view(source)
    has_pooler = any(name in view.tensors for name in POOLER)
    used = set()
    for entry in _entries(model):
        if entry.name in POOLER and not has_pooler:
            entry.variable.assign(tf.zeros(entry.variable.shape, entry.variable.dtype))
            continue
        array = view.take(entry.name, entry.shape)
        if entry.linear:
            array = array.T
        assign(entry.variable, array.reshape(tuple(entry.variable.shape)), entry.name)
        used.add(entry.name)
    used |= {name for name in view.tensors if name.startswith(HEAD_PREFIXES)}
    check_all_used(view.tensors, used, IGNORABLE, source.origin)


def to_hf(model: BertEncoder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A `BertModel` config.json and its tensors (HF names and layouts) for `model`."""
    _built(model)
    tensors = {}
    for entry in _entries(model):
        array = np.asarray(keras.ops.convert_to_numpy(entry.variable), np.float32)
        if entry.linear:
            array = array.reshape(entry.shape[::-1]).T
        tensors[entry.name] = np.ascontiguousarray(array.reshape(entry.shape))
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.intermediate_dim,
        "hidden_act": ACTIVATIONS_BACK[model.activation],
        "max_position_embeddings": model.max_length,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.layer_norm_epsilon,
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": model.dropout,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }
    return config, tensors
