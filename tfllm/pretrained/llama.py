"""The llama family's name map: Hugging Face `LlamaForCausalLM` <-> `tfllm.models.Llama`.

keras-hub has the same map (`utils/transformers/convert_llama3.py`), but it
drops `rms_norm_eps` (it builds with 1e-6; SmolLM2 uses 1e-5, and the logits
then differ by 2e-2, measured) and it can only fill a `Llama3Backbone`, not
the model tfllm generates and exports with. This map reads every key that
changes the numbers and refuses the ones tfllm does not model, naming them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfllm.errors import DataError
from tfllm.models.llama import Llama
from tfllm.pretrained.source import SourceCheckpoint, strip_prefix
from tfllm.pretrained.weights import assign, check_all_used

DEFAULT_WINDOW = 2048  # config.model.max_length of an imported llama (raise it to the context)
IGNORABLE = ("rotary_emb.inv_freq",)  # a buffer older checkpoints saved; recomputed


def _rope_parameters(source: SourceCheckpoint) -> dict[str, Any]:
    """RoPE settings from either spelling: transformers 5's `rope_parameters`
    (theta inside) or 4.x's `rope_theta` + `rope_scaling`."""
    config = source.config
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


def _rope_scaling(source: SourceCheckpoint) -> tuple[float, float, float, int]:
    scaling = _rope_parameters(source)
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return (0.0, 1.0, 4.0, 8192)
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "llama3":
        raise DataError(
            f"{source.origin}: config key 'rope_scaling' type {kind!r} is not supported "
            "(supported: llama3, none)"
        )
    return (
        float(scaling["factor"]),
        float(scaling.get("low_freq_factor", 1.0)),
        float(scaling.get("high_freq_factor", 4.0)),
        int(scaling.get("original_max_position_embeddings", 8192)),
    )


def model_config(source: SourceCheckpoint) -> dict[str, Any]:
    """`config.model` for the checkpoint; one line naming any key tfllm cannot honour."""
    config = source.config
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise DataError(f"{source.origin}: config key 'hidden_act' is {act!r}; llama needs 'silu'")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise DataError(f"{source.origin}: config key {key!r} is true; llama has no biases")
    heads = int(source.require("num_attention_heads"))
    hidden = int(source.require("hidden_size"))
    factor, low, high, original = _rope_scaling(source)
    return {
        "name": "llama",
        # The window tfllm trains, evaluates and generates in, not the trained
        # context: RoPE has no position table, so any length up to the context
        # (`max_position_embeddings`, kept as `context_length`) restores the same
        # weights, and full-context windows (8,192 for SmolLM2) are slow on a CPU.
        "max_length": min(int(config.get("max_position_embeddings", 2048)), DEFAULT_WINDOW),
        "context_length": int(config.get("max_position_embeddings", 2048)),
        "num_layers": int(source.require("num_hidden_layers")),
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": int(source.require("intermediate_size")),
        "num_kv_heads": int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or hidden // heads),
        "rope_theta": float(_rope_parameters(source)["rope_theta"]),
        "rope_scaling_factor": factor,
        "rope_low_freq_factor": low,
        "rope_high_freq_factor": high,
        "rope_original_max_length": original,
        "layer_norm_epsilon": float(config.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        "dropout": 0.0,
    }


def vocab_size(source: SourceCheckpoint) -> int:
    return int(source.take("model.embed_tokens.weight").shape[0])


def _tensor_map(model: Llama) -> list[tuple[Any, str, Any]]:
    """(variable, HF name, HF array -> our layout) for every weight of `model`."""
    d, h, kv, dh = model.hidden_dim, model.num_heads, model.num_kv_heads, model.head_dim
    pairs: list[tuple[Any, str, Any]] = [
        (model.token_embedding.embeddings, "embed_tokens.weight", lambda w: w),
        (model.final_norm.scale, "norm.weight", lambda w: w),
    ]
    if not model.tie_embeddings:
        pairs.append((model.token_embedding.reverse_embeddings, "lm_head.weight", np.transpose))
    for i, block in enumerate(model.blocks):
        p = f"layers.{i}."
        pairs += [
            (block.attention_norm.scale, p + "input_layernorm.weight", lambda w: w),
            (block.query.kernel, p + "self_attn.q_proj.weight", lambda w: w.T.reshape(d, h, dh)),
            (block.key.kernel, p + "self_attn.k_proj.weight", lambda w: w.T.reshape(d, kv, dh)),
            (block.value.kernel, p + "self_attn.v_proj.weight", lambda w: w.T.reshape(d, kv, dh)),
            (
                block.attention_output.kernel,
                p + "self_attn.o_proj.weight",
                lambda w: w.T.reshape(h, dh, d),
            ),
            (block.mlp_norm.scale, p + "post_attention_layernorm.weight", lambda w: w),
            (block.gate.kernel, p + "mlp.gate_proj.weight", np.transpose),
            (block.up.kernel, p + "mlp.up_proj.weight", np.transpose),
            (block.down.kernel, p + "mlp.down_proj.weight", np.transpose),
        ]
    return pairs


def load_into(model: Llama, source: SourceCheckpoint) -> None:
    """Copies every checkpoint tensor into `model`; one line for a missing, misshapen or
    unused tensor (an unused one means the checkpoint is not the architecture we think)."""
    tensors = strip_prefix(source.tensors, ("model.",))
    view = SourceCheckpoint(source.family, source.config, tensors, source.origin)
    used = set()
    for variable, name, to_ours in _tensor_map(model):
        hf_shape = _hf_shape(tuple(variable.shape), name)
        assign(variable, to_ours(view.take(name, hf_shape)), name)
        used.add(name)
    if model.tie_embeddings and "lm_head.weight" in tensors:
        # Some tied checkpoints store the head anyway; it must equal the embedding.
        if not np.array_equal(tensors["lm_head.weight"], tensors["embed_tokens.weight"]):
            raise DataError(
                f"{source.origin}: config says tie_word_embeddings but 'lm_head.weight' "
                "differs from the embedding"
            )
        used.add("lm_head.weight")
    check_all_used(tensors, used, IGNORABLE, source.origin)


def _hf_shape(ours: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The Hugging Face shape that maps onto one of our variables of shape `ours`."""
    if name.endswith(("embed_tokens.weight", "norm.weight", "layernorm.weight")):
        return ours
    if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
        return (ours[1] * ours[2], ours[0])
    if name.endswith("o_proj.weight"):
        return (ours[2], ours[0] * ours[1])
    return (ours[1], ours[0])  # a [in, out] kernel from an [out, in] Linear weight


def to_hf(model: Llama, context_length: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A `LlamaForCausalLM` config.json and its tensors (float32, HF names and layouts).

    `context_length` is the trained context to declare (`config.model.context_length`);
    0 declares the model's `max_length`.
    """
    tensors: dict[str, np.ndarray] = {}
    for variable, name, _ in _tensor_map(model):
        w = np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
        if w.ndim == 3 and name.endswith("o_proj.weight"):
            w = w.reshape(-1, w.shape[-1]).T
        elif w.ndim == 3:
            w = w.reshape(w.shape[0], -1).T
        elif w.ndim == 2 and not name.endswith("embed_tokens.weight"):
            w = w.T
        full = name if name == "lm_head.weight" else "model." + name
        tensors[full] = np.ascontiguousarray(w)
    factor, low, high, original = model.rope_scaling
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_dim,
        "intermediate_size": model.intermediate_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads,
        "head_dim": model.head_dim,
        "max_position_embeddings": context_length or model.max_length,
        "rms_norm_eps": model.norm_epsilon,
        "rope_theta": model.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": model.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    if factor > 0:
        config["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
    return config, tensors
