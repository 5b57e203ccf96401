"""The gpt2 family's name map: Hugging Face `GPT2LMHeadModel` <-> `tfllm.models.GPT`.

tfllm's own GPT is GPT-2's architecture (learned positions, pre-LayerNorm
blocks with biases, tied head), so a GPT-2 checkpoint imports into it
unchanged, with `activation="gelu_approximate"` for the tanh GELU GPT-2 was
trained with. Two layout details: GPT-2 stores its projections as `Conv1D`,
whose weights are `[in, out]` (a `Linear`'s transpose), and it fuses the
query, key and value projections into one `c_attn` of width `3 * hidden`.
The same map, reversed, exports any tfllm GPT as a GPT-2 checkpoint.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfllm.errors import DataError
from tfllm.models.gpt import GPT
from tfllm.pretrained.source import SourceCheckpoint, strip_prefix
from tfllm.pretrained.weights import assign, check_all_used

# Causal-mask buffers older checkpoints saved; the mask is built, not read.
IGNORABLE = (".attn.bias", ".attn.masked_bias")
ACTIVATIONS = {"gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate"}
ACTIVATIONS_BACK = {"gelu_approximate": "gelu_new", "gelu": "gelu"}


def model_config(source: SourceCheckpoint) -> dict[str, Any]:
    """`config.model` (name "gpt") for the checkpoint; one line naming a key tfllm cannot honour."""
    config = source.config
    act = config.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS and act != "gelu":
        raise DataError(
            f"{source.origin}: config key 'activation_function' is {act!r} "
            "(supported: gelu, gelu_new, gelu_pytorch_tanh)"
        )
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(key):
            raise DataError(f"{source.origin}: config key {key!r} is true; not supported")
    if config.get("scale_attn_weights", True) is False:
        raise DataError(f"{source.origin}: config key 'scale_attn_weights' is false; not supported")
    hidden = int(source.require("n_embd"))
    return {
        "name": "gpt",
        "max_length": int(source.require("n_positions")),
        "num_layers": int(source.require("n_layer")),
        "num_heads": int(source.require("n_head")),
        "hidden_dim": hidden,
        "intermediate_dim": int(config.get("n_inner") or 4 * hidden),
        "activation": ACTIVATIONS.get(act, act),
        "layer_norm_epsilon": float(config.get("layer_norm_epsilon", 1e-5)),
        "dropout": 0.0,
    }


def vocab_size(source: SourceCheckpoint) -> int:
    return int(_view(source).take("wte.weight").shape[0])


def _view(source: SourceCheckpoint) -> SourceCheckpoint:
    tensors = strip_prefix(source.tensors, ("transformer.",))
    return SourceCheckpoint(source.family, source.config, tensors, source.origin)


def load_into(model: GPT, source: SourceCheckpoint) -> None:
    """Copies every GPT-2 tensor into `model`; one line for a missing, misshapen or unused one."""
    view = _view(source)
    d, h, dh, f = model.hidden_dim, model.num_heads, model.head_dim, model.intermediate_dim
    used = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    assign(model.token_embedding.embeddings, view.take("wte.weight"), "wte.weight")
    positions = view.take("wpe.weight", (model.max_length, d))
    assign(model.position_embedding.position_embeddings, positions, "wpe.weight")
    assign(model.final_norm.gamma, view.take("ln_f.weight", (d,)), "ln_f.weight")
    assign(model.final_norm.beta, view.take("ln_f.bias", (d,)), "ln_f.bias")
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        attention = block._self_attention_layer
        qkv_w = view.take(p + "attn.c_attn.weight", (d, 3 * d))
        qkv_b = view.take(p + "attn.c_attn.bias", (3 * d,))
        for j, dense in enumerate(
            (attention._query_dense, attention._key_dense, attention._value_dense)
        ):
            part = slice(j * d, (j + 1) * d)
            assign(dense.kernel, qkv_w[:, part].reshape(d, h, dh), p + "attn.c_attn.weight")
            assign(dense.bias, qkv_b[part].reshape(h, dh), p + "attn.c_attn.bias")
        out = attention._output_dense
        assign(
            out.kernel,
            view.take(p + "attn.c_proj.weight", (d, d)).reshape(h, dh, d),
            p + "attn.c_proj.weight",
        )
        assign(out.bias, view.take(p + "attn.c_proj.bias", (d,)), p + "attn.c_proj.bias")
        pairs = [
            (block._self_attention_layer_norm.gamma, "ln_1.weight", (d,)),
            (block._self_attention_layer_norm.beta, "ln_1.bias", (d,)),
            (block._feedforward_layer_norm.gamma, "ln_2.weight", (d,)),
            (block._feedforward_layer_norm.beta, "ln_2.bias", (d,)),
            (block._feedforward_intermediate_dense.kernel, "mlp.c_fc.weight", (d, f)),
            (block._feedforward_intermediate_dense.bias, "mlp.c_fc.bias", (f,)),
            (block._feedforward_output_dense.kernel, "mlp.c_proj.weight", (f, d)),
            (block._feedforward_output_dense.bias, "mlp.c_proj.bias", (d,)),
        ]
        for variable, name, shape in pairs:
            assign(variable, view.take(p + name, shape), p + name)
        used |= {
            p + n
            for n in (
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
            )
        }
        used |= {p + name for _, name, _ in pairs}
    if "lm_head.weight" in view.tensors:
        if not np.array_equal(view.tensors["lm_head.weight"], view.tensors["wte.weight"]):
            raise DataError(f"{source.origin}: 'lm_head.weight' differs from 'wte.weight' (untied)")
        used.add("lm_head.weight")
    check_all_used(view.tensors, used, IGNORABLE, source.origin)


def to_hf(model: GPT) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A `GPT2LMHeadModel` config.json and tensors for a tfllm GPT (imported or trained here)."""

    def arr(variable) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)

    d = model.hidden_dim
    t = {
        "transformer.wte.weight": arr(model.token_embedding.embeddings),
        "transformer.wpe.weight": arr(model.position_embedding.position_embeddings),
        "transformer.ln_f.weight": arr(model.final_norm.gamma),
        "transformer.ln_f.bias": arr(model.final_norm.beta),
    }
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        attention = block._self_attention_layer
        denses = (attention._query_dense, attention._key_dense, attention._value_dense)
        t[p + "attn.c_attn.weight"] = np.concatenate(
            [arr(x.kernel).reshape(d, d) for x in denses], 1
        )
        t[p + "attn.c_attn.bias"] = np.concatenate([arr(x.bias).reshape(d) for x in denses])
        t[p + "attn.c_proj.weight"] = arr(attention._output_dense.kernel).reshape(d, d)
        t[p + "attn.c_proj.bias"] = arr(attention._output_dense.bias)
        t[p + "ln_1.weight"] = arr(block._self_attention_layer_norm.gamma)
        t[p + "ln_1.bias"] = arr(block._self_attention_layer_norm.beta)
        t[p + "ln_2.weight"] = arr(block._feedforward_layer_norm.gamma)
        t[p + "ln_2.bias"] = arr(block._feedforward_layer_norm.beta)
        t[p + "mlp.c_fc.weight"] = arr(block._feedforward_intermediate_dense.kernel)
        t[p + "mlp.c_fc.bias"] = arr(block._feedforward_intermediate_dense.bias)
        t[p + "mlp.c_proj.weight"] = arr(block._feedforward_output_dense.kernel)
        t[p + "mlp.c_proj.bias"] = arr(block._feedforward_output_dense.bias)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.max_length,
        "n_embd": d,
        "n_layer": model.num_layers,
        "n_head": model.num_heads,
        "n_inner": model.intermediate_dim,
        "activation_function": ACTIVATIONS_BACK[model.activation],
        "layer_norm_epsilon": model.layer_norm_epsilon,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    return config, {k: np.ascontiguousarray(v) for k, v in t.items()}
