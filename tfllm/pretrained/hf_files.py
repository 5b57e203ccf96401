"""Reads a Hugging Face model directory: `config.json`, `*.safetensors`, tokenizer files.

The safetensors reader is our own (about 50 lines) instead of the
`safetensors` package's NumPy loader, for one measured reason: published
checkpoints are often bfloat16, a dtype NumPy lacks, and the package's NumPy
path refuses them; reading the documented format (an 8-byte header length, a
JSON header, raw little-endian data) converts every dtype to float32 without
PyTorch; and it memory-maps the file and converts one tensor at a time, as
the importer copies it into the model, so a checkpoint is never in memory
twice. Sharded checkpoints (`model.safetensors.index.json`) are read shard
by shard.
"""

from __future__ import annotations

import json
import mmap
import os
from typing import Any

import numpy as np

from tfllm.errors import DataError
from tfllm.pretrained.source import LazyTensors, SourceCheckpoint, family_of

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 below
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def open_safetensors(path: str) -> LazyTensors:
    """Every tensor of one `.safetensors` file, read on access (the file is memory-mapped),
    floating point ones as float32."""
    try:
        with open(path, "rb") as f:
            raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: not a safetensors file (shorter than its header)")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len <= 0 or 8 + header_len > len(raw):
        raise DataError(f"{path}: not a safetensors file (bad header length)")
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except ValueError:
        raise DataError(f"{path}: not a safetensors file (header is not JSON)") from None
    start_of_data = 8 + header_len
    loaders = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise DataError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if start_of_data + end > len(raw) or end - start != count * np.dtype(dtype).itemsize:
            raise DataError(f"{path}: tensor {name!r} is truncated or its size is wrong")
        loaders[name] = (
            lambda s=start_of_data + start, n=count, d=dtype, shape=shape, k=info["dtype"]: _tensor(
                raw, s, n, d, shape, k
            )
        )
    return LazyTensors(loaders)


def _tensor(raw: mmap.mmap, offset: int, count: int, dtype: Any, shape: tuple, kind: str):
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
    if kind == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)  # a copy: nothing keeps the mapping alive
    return array.copy()


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of one `.safetensors` file, read now (small files, tests)."""
    lazy = open_safetensors(path)
    return {name: lazy[name] for name in lazy}


def _read_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise DataError(f"--source: {directory} has no config.json (not a Hugging Face model)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a JSON object")
    return config


def _weight_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{index}: not a safetensors index (no weight_map)") from None
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
    if not files:
        bins = [n for n in os.listdir(directory) if n.endswith((".bin", ".pt", ".pth", ".h5"))]
        why = (
            f" (found {bins[0]}: pickled weights are not read, convert to safetensors)"
            if bins
            else ""
        )
        raise DataError(f"--source: {directory} has no *.safetensors weights{why}")
    paths = [os.path.join(directory, n) for n in files]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"{path}: listed in the safetensors index but missing")
    return paths


def _is_byte_level(path: str) -> bool:
    """Whether a Hugging Face tokenizer.json is a byte-level BPE (GPT-2, Llama 3, SmolLM)."""
    try:
        with open(path, encoding="utf-8") as f:
            return '"ByteLevel"' in f.read()
    except (OSError, UnicodeDecodeError):
        return False


def _tokenizer_source(directory: str, family: str) -> dict[str, Any]:
    """Where the tokenizer comes from: BERT's vocab.txt; a byte-level tokenizer.json;
    else a SentencePiece tokenizer.model (Llama 2, TinyLlama, tfllm's own GPTs)."""
    if family == "bert":
        if not os.path.isfile(os.path.join(directory, "vocab.txt")):
            raise DataError(f"--source: {directory} has no vocab.txt (the BERT tokenizer)")
        return {"kind": "wordpiece", "directory": directory}
    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path) and _is_byte_level(path):
        return {"kind": "hf_json", "path": path, "directory": directory}
    model = os.path.join(directory, "tokenizer.model")
    if os.path.isfile(model):
        return {"kind": "sentencepiece", "path": model}
    if os.path.isfile(path):
        return {"kind": "hf_json", "path": path, "directory": directory}  # refused with a reason
    raise DataError(f"--source: {directory} has no tokenizer (tokenizer.json or tokenizer.model)")


def _chat_template(directory: str) -> str | None:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise DataError(f"{path}: not a valid tokenizer config") from None
    return template if isinstance(template, str) else None


def read_hf_directory(directory: str, with_tokenizer: bool = True) -> SourceCheckpoint:
    """A Hugging Face model directory as a `SourceCheckpoint` (float32 tensors, HF names).

    `with_tokenizer=False` reads the weights only (an export's read-back check).
    """
    config = _read_config(directory)
    origin = os.path.join(directory, "config.json")
    family = family_of(config.get("model_type"), origin)
    tensors = LazyTensors()
    for path in _weight_files(directory):
        shard = open_safetensors(path)
        for name in shard:
            tensors.add(name, lambda shard=shard, name=name: shard[name])
    return SourceCheckpoint(
        family=family,
        config=config,
        tensors=tensors,
        origin=directory,
        tokenizer=_tokenizer_source(directory, family) if with_tokenizer else {},
        chat_template=_chat_template(directory),
        format="safetensors",
    )
