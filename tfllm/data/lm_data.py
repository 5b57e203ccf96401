"""The language-model input pipeline: documents -> one token stream -> windows.

Documents are tokenized in the graph (the same tokenizer a SavedModel carries),
joined into one int32 stream with a single eos after each document, and cut
into windows of seq_len + 1 tokens whose first seq_len are the inputs and last
seq_len the targets (nanoGPT's layout). No padding ever enters a window, so
every target is a real next token and the loss needs no mask.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from tfllm.data.tokenizer import Tokenizer
from tfllm.errors import DataError

# Lines longer than this many characters are cut before tokenizing, so a file
# with no newlines does not become one enormous string op.
_MAX_PIECE_CHARS = 8192


def tokenize_documents(tokenizer: Tokenizer, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Tokenizes documents into one int32 stream with `eos_id` after each document.

    Each document is split into lines (each keeps its "\\n"), the lines are
    tokenized in batches by a tf.data pipeline, and their ids are joined back
    without separators, so a document's tokens stay contiguous; only document
    boundaries get an eos.
    """
    by_line = isinstance(tokenizer, Tokenizer)
    pieces: list[str] = []
    pieces_per_doc = np.zeros(len(texts), dtype=np.int64)
    for d, text in enumerate(texts):
        before = len(pieces)
        pieces.extend(_pieces(text, by_line))
        pieces_per_doc[d] = len(pieces) - before
    if not pieces:
        return np.full(len(texts), tokenizer.eos_id, dtype=np.int32)

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(pieces, tf.string))
        .batch(batch_size)
        .map(
            lambda x: _flat_with_lengths(tokenizer, x),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    flat_parts, length_parts = [], []
    for flat, lengths in dataset.as_numpy_iterator():
        flat_parts.append(flat)
        length_parts.append(lengths)
    flat_ids = np.concatenate(flat_parts).astype(np.int32, copy=False)
    piece_lengths = np.concatenate(length_parts)

    # Tokens per document = sum of its pieces' lengths; eos goes after each.
    piece_doc = np.repeat(np.arange(len(texts)), pieces_per_doc)
    doc_lengths = np.bincount(piece_doc, weights=piece_lengths, minlength=len(texts)).astype(
        np.int64
    )
    return np.insert(flat_ids, np.cumsum(doc_lengths), tokenizer.eos_id).astype(np.int32)


# Where a byte-level BPE's text may be cut without changing its tokens: after a
# newline between two non-space characters. The pre-tokenizers (GPT-2's, Llama 3's,
# Qwen2's) make that newline a word of its own and start afresh after it; a cut
# elsewhere ("\n\n", " \n": WikiText's line ends) can merge differently.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


def _pieces(text: str, by_line: bool) -> list[str]:
    """A document cut into the strings tokenized separately (each at most
    `_MAX_PIECE_CHARS`).

    tfllm's SentencePiece runs cut at every line end (each line keeps its
    "\n"), as they always have; imported byte-level tokenizers only where
    Hugging Face's whole-document ids stay the same (`_SAFE_CUT`), so
    perplexity on a file is the one transformers computes.
    """
    if by_line:
        parts = [line + "\n" for line in text.split("\n")]
        parts[-1] = parts[-1][:-1]  # The last segment had no newline after it.
    else:
        parts = _SAFE_CUT.split(text)
    size = _MAX_PIECE_CHARS
    return [p[i : i + size] for p in parts if p for i in range(0, len(p), size)]


def _flat_with_lengths(tokenizer: Tokenizer, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Tokenizes a batch and returns (all ids concatenated, ids per string)."""
    ragged = tokenizer.tokenize(texts)
    return ragged.flat_values, ragged.row_lengths()


def num_windows(n_ids: int, seq_len: int) -> int:
    """Non-overlapping input windows (seq_len + 1 tokens each) starting at 0."""
    return max(0, (int(n_ids) - 1) // seq_len)


def split_ids(
    ids: np.ndarray, eval_fraction: float, seq_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Holds out the last `eval_fraction` of the stream (nanoGPT's 90/10 split).

    With `seq_len`, both parts must hold at least one window of seq_len + 1
    tokens; without it, at least two tokens (one input/target pair).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    ids = np.asarray(ids, dtype=np.int32)
    n_eval = round(len(ids) * eval_fraction)
    train, evaluation = ids[: len(ids) - n_eval], ids[len(ids) - n_eval :]
    need = (seq_len or 1) + 1
    for name, part in (("train", train), ("eval", evaluation)):
        if len(part) < need:
            raise DataError(
                f"corpus too small to hold out {eval_fraction:.0%} for eval: the {name} part has "
                f"{len(part)} of {len(ids)} tokens, need at least {need} (one window of "
                f"{need - 1}+1 tokens)"
            )
    return train, evaluation


def make_lm_dataset(
    ids: np.ndarray,
    seq_len: int,
    batch_size: int,
    *,
    shuffle: bool,
    repeat: bool,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, targets), int32 [batch_size, seq_len]; targets = inputs shifted by one.

    Windows start at offset + k * seq_len. With `shuffle`, each epoch draws a
    random offset in [0, seq_len) and a random window order from (seed,
    epoch), so runs are reproducible and epochs differ. With `input_context`,
    pipeline i takes every num_input_pipelines-th window of the (shared)
    order, so pipelines see disjoint windows and equally many batches;
    `batch_size` is then the per-replica batch.
    """
    return _windows_dataset(
        ids, seq_len, batch_size, shuffle, repeat, seed, input_context, "corpus"
    )


def eval_dataset(ids: np.ndarray, seq_len: int, batch_size: int) -> tf.data.Dataset:
    """One deterministic pass over the windows in order, for perplexity."""
    return _windows_dataset(ids, seq_len, batch_size, False, False, 0, None, "eval split")


def _windows_dataset(
    ids: np.ndarray,
    seq_len: int,
    batch_size: int,
    shuffle: bool,
    repeat: bool,
    seed: int,
    input_context: tf.distribute.InputContext | None,
    name: str,
) -> tf.data.Dataset:
    """Shared body of `make_lm_dataset` and `eval_dataset`."""
    if seq_len < 1 or batch_size < 1:
        raise DataError(f"seq_len and batch_size must be positive, got {seq_len} and {batch_size}")
    ids = np.asarray(ids, dtype=np.int32).reshape(-1)
    n = len(ids)
    shards = input_context.num_input_pipelines if input_context else 1
    shard = input_context.input_pipeline_id if input_context else 0
    need_windows = batch_size * shards
    if shuffle:
        # A window count that fits whatever offset an epoch draws, so every
        # epoch (and every pipeline) yields the same number of batches.
        windows = max(0, (n - seq_len) // seq_len)
        need_tokens = (need_windows + 1) * seq_len
    else:
        windows = num_windows(n, seq_len)
        need_tokens = need_windows * seq_len + 1
    if windows < need_windows:
        across = f" across {shards} input pipelines" if shards > 1 else ""
        raise DataError(
            f"{name} too small: {n} tokens, need at least {need_tokens} for one batch of "
            f"{batch_size} windows of {seq_len}+1 tokens{across}"
        )
    per_shard = windows // shards
    stream = tf.constant(ids)
    offsets = tf.range(seq_len + 1, dtype=tf.int64)

    def epoch_starts(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.range(windows, dtype=tf.int64)
        offset = tf.constant(0, tf.int64)
        if shuffle:
            epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=epoch_seed)
            offset = tf.random.stateless_uniform(
                [], seed=epoch_seed + [0, 7919], minval=0, maxval=seq_len, dtype=tf.int64
            )
        mine = order[shard::shards][:per_shard]
        return tf.data.Dataset.from_tensor_slices(offset + mine * seq_len)

    def gather(starts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        window = tf.gather(stream, starts[:, None] + offsets[None, :])
        return window[:, :-1], window[:, 1:]

    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    dataset = epochs.flat_map(epoch_starts).batch(batch_size, drop_remainder=True)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    if input_context is not None:  # Already sharded above; do not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
