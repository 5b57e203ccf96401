"""What an importer reads from a published checkpoint, whatever its file format.

Both readers (`hf_files` for Hugging Face directories, `gguf_files` for GGUF
files) produce a `SourceCheckpoint`: the architecture family, the model's
hyper-parameters under Hugging Face's `config.json` key names, every tensor
as float32 NumPy under Hugging Face's tensor names and layouts, and what the
tokenizer is built from. A GGUF file is translated into that vocabulary
(names, Q/K permutation), so each family's name map is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfllm.errors import DataError

# Hugging Face `model_type` -> tfllm family. Mistral-style and Qwen2-style
# checkpoints differ from Llama in details tfllm does not model (sliding
# windows, q/k/v biases), so they are refused rather than imported wrongly.
FAMILIES = {"llama": "llama", "gpt2": "gpt2", "bert": "bert"}


class LazyTensors(MutableMapping):
    """Tensor name -> array, each produced only when it is read.

    An importer copies each tensor into its variable and drops it, so a
    checkpoint is never held in float32 twice: for SmolLM2 that is the
    difference between ~1.4 GB and ~2.3 GB of peak memory (measured with a
    dict of every dequantized tensor). Reading a name twice produces it twice.
    """

    def __init__(self, loaders: Mapping[str, Callable[[], np.ndarray]] | None = None) -> None:
        self._loaders: dict[str, Callable[[], np.ndarray]] = dict(loaders or {})

    def add(self, name: str, loader: Callable[[], np.ndarray]) -> None:
        """Registers how to produce `name` (read when first asked for)."""
        self._loaders[name] = loader

    def __getitem__(self, name: str) -> np.ndarray:
        return self._loaders[name]()

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        self._loaders[name] = lambda: array

    def __delitem__(self, name: str) -> None:
        del self._loaders[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


@dataclass
class SourceCheckpoint:
    """A published checkpoint, read into memory in Hugging Face terms.

    Attributes:
        family: "llama", "gpt2" or "bert".
        config: the Hugging Face config (`config.json` keys; built from the
            metadata for a GGUF file).
        tensors: Hugging Face tensor name -> float32 array, in Hugging Face's
            layout (`nn.Linear` weights are [out, in]; GPT-2's `Conv1D` [in, out]).
        origin: the path it was read from, for error messages and records.
        tokenizer: how to build the tokenizer: {"kind": "hf_json", "path": ...},
            {"kind": "wordpiece", "directory": ...} or {"kind": "gguf", ...fields}.
        chat_template: the Jinja chat template, where the model has one.
        format: "safetensors" or "gguf", plus the quantization where there is one.
    """

    family: str
    config: dict[str, Any]
    tensors: MutableMapping[str, np.ndarray]
    origin: str
    tokenizer: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    format: str = "safetensors"

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor `name`, checked against `shape`; one clear line when absent or wrong."""
        if name not in self.tensors:
            raise DataError(f"{self.origin}: tensor {name!r} is missing from the checkpoint")
        array = self.tensors[name]
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise DataError(
                f"{self.origin}: tensor {name!r} has shape {tuple(array.shape)}, "
                f"expected {tuple(shape)} from the model's config"
            )
        return array

    def require(self, key: str) -> Any:
        """The config value `key`; one clear line naming the key when it is absent."""
        if key not in self.config or self.config[key] is None:
            raise DataError(f"{self.origin}: config key {key!r} is missing")
        return self.config[key]


def family_of(model_type: Any, origin: str) -> str:
    """The tfllm family for a Hugging Face `model_type`, or one line saying it is unsupported."""
    if model_type not in FAMILIES:
        raise DataError(
            f"{origin}: architecture {model_type!r} is not supported "
            f"(supported: {', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[model_type]


def strip_prefix(tensors: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> LazyTensors:
    """Tensor names without a task wrapper's prefix (`model.`, `bert.`, `transformer.`).

    A `LlamaForCausalLM` stores `model.layers.0…`, a `BertModel` `encoder.layer.0…`
    and a `BertForSequenceClassification` `bert.encoder.layer.0…`; the name maps
    see one spelling. Names outside the prefix (a task head) are kept as they are.
    A renamed view: nothing is read until a tensor is.
    """
    out = {}
    for name in tensors:
        short = name
        for prefix in prefixes:
            if name.startswith(prefix):
                short = name[len(prefix) :]
                break
        out[short] = lambda name=name: tensors[name]
    return LazyTensors(out)
