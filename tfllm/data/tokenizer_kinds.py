"""Which tokenizer a `tokenizer/` directory holds, and loading it.

A workdir's tokenizer is one of three kinds, all run in the graph with the
same interface (`tokenize`, `detokenize`, `encode`, `decode`, the special
ids, `save`/`load`): SentencePiece learned from the corpus (tfllm's own
runs), byte-level BPE (imported llama and GPT-2 models), BERT WordPiece
(imported encoders). `tokenizer.json` names the kind; runs from before the
imported kinds existed have no "type" and are SentencePiece.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from tfllm.data.byte_bpe import ByteBPETokenizer
from tfllm.data.tokenizer import CONFIG_FILE, MODEL_FILE, Tokenizer
from tfllm.data.wordpiece import WordPieceTokenizer
from tfllm.errors import DataError

KINDS: dict[str, type] = {
    "sentencepiece": Tokenizer,
    ByteBPETokenizer.TYPE: ByteBPETokenizer,
    WordPieceTokenizer.TYPE: WordPieceTokenizer,
}
AnyTokenizer = Tokenizer | ByteBPETokenizer | WordPieceTokenizer
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # an instruct model's template, beside the tokenizer


def tokenizer_kind(directory: str | os.PathLike) -> str:
    """The kind `directory/tokenizer.json` records ("sentencepiece" when it names none)."""
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            config: Any = json.load(f)
    except FileNotFoundError:
        raise DataError(f"tokenizer file missing: {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt tokenizer config ({e})") from None
    kind = config.get("type", "sentencepiece") if isinstance(config, dict) else None
    if kind not in KINDS:
        raise DataError(f"{path}: unknown tokenizer type {kind!r} (known: {', '.join(KINDS)})")
    return kind


def load_tokenizer(directory: str | os.PathLike) -> AnyTokenizer:
    """Loads whichever kind of tokenizer `directory` holds, checking it is intact."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"tokenizer directory not found: {directory}")
    return KINDS[tokenizer_kind(directory)].load(directory)


def chat_template(directory: str | os.PathLike) -> str | None:
    """The chat template saved beside the tokenizer (instruct models), or None."""
    path = os.path.join(os.fspath(directory), CHAT_TEMPLATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def tokenizer_files(tokenizer: AnyTokenizer) -> dict[str, bytes]:
    """The files that ship a tokenizer beside an exported artifact (file name -> bytes).

    SentencePiece ships its `tokenizer.model` alone (what the TensorFlow-free
    runners read, examples/litert_generate.py); the imported kinds ship what
    their `save` writes, so `load_shipped_tokenizer` rebuilds them whole.
    """
    if isinstance(tokenizer, Tokenizer):
        return {MODEL_FILE: tokenizer.model_proto}
    with tempfile.TemporaryDirectory() as scratch:
        directory = os.path.join(scratch, "tokenizer")
        tokenizer.save(directory)
        files = {}
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                files[name] = f.read()
        return files


def load_shipped_tokenizer(directory: str | os.PathLike) -> AnyTokenizer:
    """The tokenizer `tokenizer_files` put in `directory` (an export's folder)."""
    directory = os.fspath(directory)
    model = os.path.join(directory, MODEL_FILE)
    if os.path.isfile(model):
        with open(model, "rb") as f:
            return Tokenizer(f.read())
    if not os.path.isfile(os.path.join(directory, CONFIG_FILE)):
        raise DataError(
            f"{directory}: no tokenizer beside the export ({MODEL_FILE} or {CONFIG_FILE})"
        )
    return load_tokenizer(directory)
