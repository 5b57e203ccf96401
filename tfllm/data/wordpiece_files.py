"""Reading the WordPiece tokenizer's files: ours, and Hugging Face's BERT tokenizer files.

Kept apart from `tfllm.data.wordpiece` (the in-graph tokenizer) so each
reads on its own: this module only turns files into a vocabulary and the
tokenizer's settings, with one clear line naming the file when one is
missing, corrupt, or asks for something the tokenizer does not do.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfllm.errors import DataError

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer.json"  # ours (type "wordpiece"), and HF's file of the same name
HF_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")
DEFAULT_SPECIAL_TOKENS = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}
PREFIX = "##"


def read_json(path: str) -> dict[str, Any]:
    """A JSON object from `path`, or one line naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"tokenizer file missing: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt tokenizer config ({' '.join(str(e).split())})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: corrupt tokenizer config (not a JSON object)")
    return value


def read_vocab(path: str) -> tuple[list[str], bytes]:
    """vocab.txt's pieces (one a line, as HF reads it) and its raw bytes (for the checksum)."""
    if not os.path.isfile(path):
        raise DataError(f"tokenizer file missing: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8") from None
    vocab = text.split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    return vocab, raw


def hf_settings(directory: str) -> tuple[list[str], dict[str, Any]]:
    """vocab.txt's pieces and the WordPieceTokenizer keyword arguments HF's files ask for.

    tokenizer_config.json gives the slow tokenizer's settings and the special
    tokens' names; tokenizer.json, where present, is what
    `BertTokenizerFast` runs, so its normalizer settings and added tokens win.
    """
    vocab, _ = read_vocab(os.path.join(directory, VOCAB_FILE))
    options: dict[str, Any] = {}
    hf_config_path = os.path.join(directory, HF_CONFIG_FILE)
    if os.path.isfile(hf_config_path):
        hf = read_json(hf_config_path)
        options.update(
            lowercase=hf.get("do_lower_case", True),
            strip_accents=hf.get("strip_accents"),
            tokenize_chinese_chars=hf.get("tokenize_chinese_chars", True),
        )
        special = {}
        for name in SPECIAL_NAMES:
            token = hf.get(f"{name}_token")
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str):
                special[name] = token
        options["special_tokens"] = special
    fast_path = os.path.join(directory, CONFIG_FILE)
    if os.path.isfile(fast_path):
        options.update(_fast_settings(fast_path, vocab))
    return vocab, options


def _fast_settings(path: str, vocab: list[str]) -> dict[str, Any]:
    """The settings of HF's tokenizer.json, refusing what this tokenizer does not do."""
    fast = read_json(path)
    normalizer = fast.get("normalizer") or {}
    model = fast.get("model") or {}
    pre = fast.get("pre_tokenizer") or {}
    kinds = (normalizer.get("type"), pre.get("type"), model.get("type"))
    if kinds != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
        raise DataError(
            f"{path}: not a BERT WordPiece tokenizer (normalizer {kinds[0]!r}, "
            f"pre_tokenizer {kinds[1]!r}, model {kinds[2]!r})"
        )
    if model.get("continuing_subword_prefix", PREFIX) != PREFIX:
        raise DataError(f"{path}: continuing_subword_prefix must be {PREFIX!r}")
    pieces = model.get("vocab") or {}
    if pieces and pieces != {t: i for i, t in enumerate(vocab)}:
        raise DataError(f"{path}: its vocabulary differs from {VOCAB_FILE}")
    added = []
    for token in fast.get("added_tokens") or []:
        if any(token.get(k) for k in ("lstrip", "rstrip", "single_word", "normalized")):
            raise DataError(
                f"{path}: added token {token.get('content')!r} uses lstrip/rstrip/"
                "single_word/normalized, which tfllm's WordPiece does not support"
            )
        added.append((token.get("content"), bool(token.get("special"))))
    settings: dict[str, Any] = {
        "lowercase": normalizer.get("lowercase", True),
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": normalizer.get("handle_chinese_chars", True),
        "clean_text": normalizer.get("clean_text", True),
        "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
    }
    if added:
        settings["added_tokens"] = added
    return settings
