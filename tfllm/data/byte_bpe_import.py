"""Published byte-level BPE tokenizers -> `ByteBPETokenizer` constructor arguments.

Two sources: a Hugging Face `tokenizer.json`, and the `tokenizer.ggml.*`
metadata of a GGUF file (llama.cpp). Anything this package would tokenize
differently from the reference raises a one-line `DataError` naming the
component (model type, normalizer, pre-tokenizer, decoder, added-token option,
GGUF `pre`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from tfllm.data.byte_bpe_pretokenize import SPLIT_PATTERNS
from tfllm.errors import DataError

SPECIAL_NAMES = ("pad", "unk", "bos", "eos")
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4

# llama.cpp's `tokenizer.ggml.pre` -> (stages, ignore_merges), as llama-vocab.cpp maps them.
_GPT2 = [{"type": "split", "pattern": "gpt2"}]
_DIGITS_GPT2 = [{"type": "digits", "individual": True}, *_GPT2]
_LLAMA3 = [{"type": "split", "pattern": "llama3"}]
_QWEN2 = [{"type": "split", "pattern": "qwen2"}]
GGUF_PRE: dict[str, tuple[list[dict[str, Any]], bool]] = {
    "gpt2": (_GPT2, False),
    **{
        name: (_DIGITS_GPT2, False)
        for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone")
    },
    **{name: (_LLAMA3, True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")},
    **{name: (_QWEN2, False) for name in ("qwen2", "deepseek-r1-qwen")},
}
_HF_PATTERN_NAMES = {hf: name for name, (hf, _, _) in SPLIT_PATTERNS.items()}


def gguf_arguments(
    tokens: Sequence[str],
    merges: Sequence[str],
    token_types: Sequence[int],
    pre: str,
    special_ids: dict[str, int | None],
    model: str = "gpt2",
) -> dict[str, Any]:
    """GGUF tokenizer metadata -> constructor arguments. Control (3) and
    user-defined (4) tokens are the added tokens, matched literally, as llama.cpp
    does; a byte the vocabulary lacks is dropped, as llama.cpp and HF do."""
    if model != "gpt2":
        raise DataError(f"unsupported tokenizer.ggml.model {model!r} (only gpt2, byte-level BPE)")
    if pre not in GGUF_PRE:
        raise DataError(
            f"unsupported tokenizer.ggml.pre {pre!r} (supported: {', '.join(sorted(GGUF_PRE))})"
        )
    if len(token_types) != len(tokens):
        raise DataError(
            f"tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens"
        )
    stages, ignore_merges = GGUF_PRE[pre]
    kinds = (GGUF_CONTROL, GGUF_USER_DEFINED)
    return {
        "vocab": {t: i for i, t in enumerate(tokens)},
        "merges": list(merges),
        "added_tokens": [
            {"id": i, "content": t, "normalized": False}
            for i, (t, kind) in enumerate(zip(tokens, token_types, strict=True))
            if int(kind) in kinds
        ],
        "pre_tokenizer": stages,
        "ignore_merges": ignore_merges,
        "special_ids": {
            k: -1 if special_ids.get(k) is None else int(special_ids[k]) for k in SPECIAL_NAMES
        },  # fmt: skip
    }


def hf_arguments(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """HF tokenizer.json (parsed) -> constructor arguments. `names` gives the
    bos/eos/pad (and unk) token texts; the BPE model's own `unk_token` wins."""
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise DataError(f"unsupported model type {model.get('type')!r} (only byte-level BPE)")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key):
            raise DataError(f"unsupported BPE option {key}={model[key]!r}")
    decoder = data.get("decoder")
    if decoder is not None and decoder.get("type") != "ByteLevel":
        raise DataError(f"unsupported decoder {decoder.get('type')!r} (only ByteLevel)")
    added = []
    for token in data.get("added_tokens") or []:
        for flag in ("lstrip", "rstrip", "single_word"):
            if token.get(flag):
                raise DataError(
                    f"unsupported added token option {flag} on {token.get('content')!r}"
                )
        normalized = token.get("normalized", not token.get("special", False))
        added.append({"id": token["id"], "content": token["content"], "normalized": normalized})
    vocab = model.get("vocab") or {}
    lookup = {**vocab, **{t["content"]: t["id"] for t in added}}
    unk = model.get("unk_token")
    names = {**names, "unk": unk or names.get("unk")}
    return {
        "vocab": vocab,
        "merges": model.get("merges") or [],
        "added_tokens": added,
        "pre_tokenizer": stages_from_hf(data.get("pre_tokenizer")),
        "normalizer": _hf_normalizer(data.get("normalizer")),
        "ignore_merges": bool(model.get("ignore_merges")),
        "special_ids": {n: lookup.get(names[n], -1) if names.get(n) else -1 for n in SPECIAL_NAMES},
        "byte_unk_id": vocab.get(unk, -1) if unk else -1,
        "fuse_unk": bool(model.get("fuse_unk")),
    }


def stages_from_hf(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """HF's `pre_tokenizer` JSON -> stages; DataError names what is unsupported."""
    if pre_tokenizer is None:
        raise DataError("unsupported pre_tokenizer: none (not a byte-level BPE)")
    parts = (
        pre_tokenizer.get("pretokenizers", [])
        if pre_tokenizer.get("type") == "Sequence"
        else [pre_tokenizer]
    )
    stages: list[dict[str, Any]] = []
    byte_level = False
    for part in parts:
        kind = part.get("type")
        if byte_level:
            raise DataError(f"unsupported pre_tokenizer: {kind} after ByteLevel")
        if kind == "ByteLevel":
            byte_level = True
            if part.get("add_prefix_space", True):
                stages.append({"type": "prefix_space"})
            if part.get("use_regex", True):
                stages.append({"type": "split", "pattern": "gpt2"})
        elif kind == "Digits":
            stages.append({"type": "digits", "individual": bool(part.get("individual_digits"))})
        elif kind == "Split":
            stages.append(_split_stage(part))
        else:
            raise DataError(f"unsupported pre_tokenizer: {kind}")
    if not byte_level:
        raise DataError("unsupported pre_tokenizer: no ByteLevel step (not a byte-level BPE)")
    return stages


def _split_stage(part: dict[str, Any]) -> dict[str, Any]:
    pattern = part.get("pattern") or {}
    regex = pattern.get("Regex")
    if part.get("behavior") != "Isolated" or part.get("invert"):
        raise DataError(
            f"unsupported pre_tokenizer: Split with behavior {part.get('behavior')} "
            f"invert {part.get('invert')} (only Isolated, not inverted)"
        )
    if regex not in _HF_PATTERN_NAMES:
        raise DataError(
            f"unsupported pre_tokenizer: Split pattern {pattern!r} "
            f"(known: the {', '.join(SPLIT_PATTERNS)} patterns)"
        )
    return {"type": "split", "pattern": _HF_PATTERN_NAMES[regex]}


def _hf_normalizer(normalizer: dict[str, Any] | None) -> str | None:
    if normalizer is None:
        return None
    kind = normalizer.get("type")
    parts = normalizer.get("normalizers", []) if kind == "Sequence" else [normalizer]
    kinds = [p.get("type") for p in parts]
    for k in kinds:
        if k != "NFC":
            raise DataError(f"unsupported normalizer {k!r} (only none or NFC)")
    return "NFC" if kinds else None


def sibling_special_tokens(path: str) -> dict[str, str]:
    """bos/eos/pad/unk token texts from `tokenizer_config.json` next to `path`, if any."""
    sibling = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    if not os.path.isfile(sibling):
        return {}
    config = read_json(sibling, "tokenizer_config.json")
    names = {}
    for name in SPECIAL_NAMES:
        value = config.get(f"{name}_token")
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            names[name] = value
    return names


def read_json(path: str, what: str) -> dict[str, Any]:
    """A JSON object from `path`; DataError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({one_line(e)})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt {what} ({one_line(e)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: corrupt {what} (not a JSON object)")
    return data


def one_line(error: BaseException) -> str:
    """Collapses an exception message to one line."""
    return " ".join(str(error).split()) or type(error).__name__


def hf_pre_tokenizer(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Stages -> HF's `pre_tokenizer` JSON (the inverse of `stages_from_hf`).

    A trailing GPT-2 split (and a prefix-space stage just before it) go back
    into the `ByteLevel` step, where HF applies them per piece; earlier
    stages become `Digits` / `Split` steps before it.
    """
    stages = [dict(s) for s in stages]
    use_regex = bool(stages) and stages[-1] == {"type": "split", "pattern": "gpt2"}
    if use_regex:
        stages.pop()
    add_prefix_space = bool(stages) and stages[-1]["type"] == "prefix_space"
    if add_prefix_space:
        stages.pop()
    steps: list[dict[str, Any]] = []
    for stage in stages:
        if stage["type"] == "digits":
            steps.append({"type": "Digits", "individual_digits": bool(stage.get("individual"))})
        elif stage["type"] == "split":
            regex = SPLIT_PATTERNS[stage["pattern"]][0]
            steps.append(
                {
                    "type": "Split",
                    "pattern": {"Regex": regex},
                    "behavior": "Isolated",
                    "invert": False,
                }  # fmt: skip
            )
        else:
            raise DataError(f"cannot write pre_tokenizer stage {stage!r} in Hugging Face form")
    steps.append(
        {
            "type": "ByteLevel",
            "add_prefix_space": add_prefix_space,
            "trim_offsets": True,
            "use_regex": use_regex,
        }  # fmt: skip
    )
    return steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}


def hf_tokenizer_json(data: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face `tokenizer.json` for a byte-level BPE's data (`ByteBPETokenizer.data()`)."""
    unk = None
    if data["byte_unk_id"] >= 0:
        unk = next(p for p, i in data["vocab"].items() if i == data["byte_unk_id"])
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": t["id"],
                "content": t["content"],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": t["normalized"],
                "special": True,
            }  # fmt: skip
            for t in data["added_tokens"]
        ],
        "normalizer": {"type": "NFC"} if data["normalizer"] == "NFC" else None,
        "pre_tokenizer": hf_pre_tokenizer(data["pre_tokenizer"]),
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },  # fmt: skip
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": data["fuse_unk"],
            "byte_fallback": False,
            "ignore_merges": data["ignore_merges"],
            "vocab": data["vocab"],
            "merges": data["merges"],
        },
    }
