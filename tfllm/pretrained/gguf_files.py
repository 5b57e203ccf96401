"""Reads a GGUF file (llama.cpp's format) into Hugging Face terms.

The `gguf` package (maintained with llama.cpp) parses the file and
dequantizes its tensors; what this module adds is the translation llama.cpp's
converter applied in reverse: GGUF tensor names back to Hugging Face ones,
metadata keys back to `config.json` keys, and the rotary permutation of the
query and key weights undone. llama.cpp stores Q/K rows interleaved for its
RoPE kernel (pairs (0, 1), (2, 3), …); Hugging Face rotates halves (i, i + d/2).
Without the un-permute, logits of SmolLM2 are off by 6.4 while the first
greedy token still looks right (measured), so it is tested on logits.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfllm.errors import DataError
from tfllm.pretrained.source import LazyTensors, SourceCheckpoint, family_of

# GGUF tensor types we dequantize (the gguf package supports these in NumPy).
SUPPORTED_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

# GGUF block tensor -> Hugging Face Llama tensor (per layer).
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp writes Llama 3.1's RoPE scaling as a tensor of per-pair divisors
# instead of config keys; reading it back into factors is not done yet.
UNSUPPORTED = {"rope_freqs.weight": "Llama 3.1 RoPE scaling (rope_freqs)"}


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation: interleaved pairs back to rotated halves.

    llama.cpp's converter does `w.reshape(h, 2, r // h // 2, c).swapaxes(1, 2)`;
    this is its inverse, so `unpermute_rotary(permute(w)) == w` (tested).
    """
    rows, cols = weight.shape
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, cols)
        .swapaxes(1, 2)
        .reshape(rows, cols)
    )


def permute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's Q/K permutation (for writing test GGUF files the way llama.cpp does)."""
    rows, cols = weight.shape
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, cols)
        .swapaxes(1, 2)
        .reshape(rows, cols)
    )


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _config(reader: Any, path: str) -> dict[str, Any]:
    arch = _field(reader, "general.architecture")
    family = family_of(arch, path)
    if family != "llama":
        raise DataError(f"{path}: GGUF architecture {arch!r} is not supported (only llama)")

    def need(key: str) -> Any:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise DataError(f"{path}: GGUF metadata key {arch}.{key!r} is missing")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        "max_position_embeddings": int(need("context_length")),
        # Stored as float32 (9.999999747378752e-06); 6 digits give back the intended 1e-05.
        "rms_norm_eps": float(f"{float(need('attention.layer_norm_rms_epsilon')):.6g}"),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        "head_dim": int(_field(reader, f"{arch}.rope.dimension_count", hidden // heads)),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise DataError(f"{path}: GGUF rope scaling {scaling!r} is not supported")
    return config


def _tokenizer_fields(reader: Any, path: str) -> dict[str, Any]:
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise DataError(
            f"{path}: GGUF tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2')"
        )

    def ids(key: str) -> int:
        value = _field(reader, f"tokenizer.ggml.{key}")
        return -1 if value is None else int(value)

    return {
        "kind": "gguf",
        "tokens": list(_field(reader, "tokenizer.ggml.tokens", [])),
        "merges": list(_field(reader, "tokenizer.ggml.merges", [])),
        "token_types": [int(t) for t in _field(reader, "tokenizer.ggml.token_type", [])],
        "pre": _field(reader, "tokenizer.ggml.pre", "default"),
        "bos_id": ids("bos_token_id"),
        "eos_id": ids("eos_token_id"),
        "pad_id": ids("padding_token_id"),
        "unk_id": ids("unknown_token_id"),
        "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
    }


def _dequantize(tensor: Any, path: str) -> np.ndarray:
    from gguf import quants  # Lazy: the package builds NumPy kernels at import.

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TYPES:
        raise DataError(f"{path}: tensor {tensor.name!r} has unsupported type {kind}")
    try:
        array = quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise DataError(f"{path}: tensor {tensor.name!r} has unsupported type {kind}") from None
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
    return np.asarray(array, dtype=np.float32).reshape(shape)


def _load(tensor: Any, rotary_heads: int, path: str) -> np.ndarray:
    """One tensor, dequantized, with the Q/K permutation undone (`rotary_heads` > 0)."""
    array = _dequantize(tensor, path)
    return unpermute_rotary(array, rotary_heads) if rotary_heads else array


def read_gguf(path: str) -> SourceCheckpoint:
    """A GGUF Llama-family file as a `SourceCheckpoint` (dequantized float32, HF names)."""
    import gguf  # Lazy: only an import from GGUF needs it.

    if not os.path.isfile(path):
        raise DataError(f"--source: no such file: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise DataError(f"{path}: not a readable GGUF file ({str(e).splitlines()[0]})") from None
    config = _config(reader, path)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    loaders = {}
    kinds = set()
    for tensor in reader.tensors:
        name = tensor.name
        if name in UNSUPPORTED:
            raise DataError(f"{path}: tensor {name!r} ({UNSUPPORTED[name]}) is not supported yet")
        if name in GLOBAL_NAMES:
            hf_name = GLOBAL_NAMES[name]
        elif name.startswith("blk.") and name.split(".", 2)[2] in LAYER_NAMES:
            _, layer, rest = name.split(".", 2)
            hf_name = f"model.layers.{int(layer)}.{LAYER_NAMES[rest]}"
        else:
            raise DataError(f"{path}: unexpected tensor {name!r} (not a Llama-family tensor)")
        if tensor.tensor_type.name not in SUPPORTED_TYPES:
            raise DataError(
                f"{path}: tensor {name!r} has unsupported type {tensor.tensor_type.name}"
            )
        kinds.add(tensor.tensor_type.name)
        count = heads if hf_name.endswith("q_proj.weight") else 0
        count = kv_heads if hf_name.endswith("k_proj.weight") else count
        loaders[hf_name] = lambda t=tensor, n=count: _load(t, n, path)
    tensors = LazyTensors(loaders)
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    template = _field(reader, "tokenizer.chat_template")
    return SourceCheckpoint(
        family="llama",
        config=config,
        tensors=tensors,
        origin=path,
        tokenizer=_tokenizer_fields(reader, path),
        chat_template=template if isinstance(template, str) else None,
        format="gguf (" + ", ".join(sorted(kinds)) + ")",
    )
