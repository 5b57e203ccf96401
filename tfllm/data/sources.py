"""From a config's `data` / `tokenizer` sections to a tokenizer and token streams.

This is the first two stages of the data flow (corpus → tokenizer → tf.data):
it resolves where the text comes from (a user file or a bundled set), learns
or reuses the tokenizer in `W/tokenizer/`, and tokenizes the splits.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from tfllm.data.corpus import DEFAULT_MAX_ROW_CHARS, bundled_paths, read_documents
from tfllm.data.lm_data import split_ids, tokenize_documents
from tfllm.data.tokenizer import Tokenizer
from tfllm.data.tokenizer_kinds import AnyTokenizer, load_tokenizer
from tfllm.errors import ConfigError

# Field names of the bundled sets, used when the config points at them.
_BUNDLED_FORMAT = {
    "shakespeare": ("text", "text", ""),
    "sst2": ("tsv", "sentence", "label"),
}


@dataclass
class TextSplits:
    """Raw documents for training and (optionally) a separate eval file."""

    train: list[str]
    eval: list[str] | None
    train_source: str


def data_fields(data: ml_collections.ConfigDict) -> tuple[str, str, str]:
    """(format, text field, label field) of the run's data: the bundled set's, or the config's."""
    if data.train_path or data.dataset not in _BUNDLED_FORMAT:
        return data.format, data.text_field, data.label_field
    return _BUNDLED_FORMAT[data.dataset]


def bad_row_policy(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """`read_documents` keyword arguments from `config.data`.

    `.get` with defaults: a config.json saved before these keys existed still loads.
    """
    return {
        "on_bad_row": data.get("on_bad_row", "skip"),
        "max_row_chars": int(data.get("max_row_chars", DEFAULT_MAX_ROW_CHARS)),
    }


def load_text_splits(data: ml_collections.ConfigDict) -> TextSplits:
    """Reads the training documents and, if configured, the eval documents."""
    row_policy = bad_row_policy(data)
    if data.train_path:
        train = read_documents(
            data.train_path,
            data.format,
            data.text_field,
            what="config.data.train_path",
            **row_policy,
        )
        evaluation = None
        if data.eval_path:
            evaluation = read_documents(
                data.eval_path,
                data.format,
                data.text_field,
                what="config.data.eval_path",
                **row_policy,
            ).texts
        return TextSplits(train.texts, evaluation, data.train_path)
    fmt, text_field, _ = _BUNDLED_FORMAT[data.dataset]
    paths = bundled_paths(data.dataset)
    what = f"bundled {data.dataset}"
    train = read_documents(paths["train"], fmt, text_field, what=what, **row_policy)
    evaluation = None
    if "dev" in paths:
        evaluation = read_documents(paths["dev"], fmt, text_field, what=what, **row_policy).texts
    return TextSplits(train.texts, evaluation, f"bundled:{data.dataset}")


def _tokenizer_dir(path: str) -> str:
    """Accepts a tokenizer directory or a workdir that contains `tokenizer/`."""
    nested = os.path.join(path, "tokenizer")
    return nested if os.path.isdir(nested) else path


def ensure_tokenizer(
    config: ml_collections.ConfigDict, workdir: str, texts: list[str] | None
) -> AnyTokenizer:
    """Loads `W/tokenizer`, else copies a given one, else learns one from `texts`.

    Precedence: an existing `W/tokenizer/` (resume) > `config.tokenizer.path` >
    the tokenizer of `config.train.init_from` (a fine-tuned model must keep its
    pretraining vocabulary) > a new one learned from the training text.
    """
    target = os.path.join(workdir, "tokenizer")
    if os.path.isdir(target):
        return load_tokenizer(target)
    source = config.tokenizer.path or (
        config.train.init_from if config.train.get("init_from") else ""
    )
    if source:
        what = "config.tokenizer.path" if config.tokenizer.path else "config.train.init_from"
        src = _tokenizer_dir(source)
        if not os.path.isdir(src):
            raise ConfigError(f"{what}: no tokenizer directory at {source}")
        tokenizer = load_tokenizer(src)
        tmp = target + ".tmp-copy"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, target)
        logging.info("Reusing tokenizer from %s", src)
        return tokenizer
    if not texts:
        raise ConfigError(
            "config.tokenizer: no tokenizer in the workdir and no text to learn one from"
        )
    print(
        f"Learning a {config.tokenizer.model_type} tokenizer "
        f"(vocab {config.tokenizer.vocab_size}) from the training text...",
        flush=True,
    )
    tokenizer = Tokenizer.train(
        texts,
        vocab_size=int(config.tokenizer.vocab_size),
        model_type=config.tokenizer.model_type,
        seed=int(config.train.seed),
    )
    tokenizer.save(target)
    return tokenizer


def lm_token_streams(
    config: ml_collections.ConfigDict, tokenizer: Tokenizer, splits: TextSplits
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tokenizes the splits; without an eval file, holds out the stream's tail."""
    train_ids = tokenize_documents(tokenizer, splits.train)
    if splits.eval is not None:
        return train_ids, tokenize_documents(tokenizer, splits.eval)
    fraction = float(config.data.eval_fraction)
    if fraction <= 0:
        return train_ids, None
    return split_ids(train_ids, fraction, seq_len=int(config.model.max_length))
