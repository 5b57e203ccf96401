"""The classifier input pipeline: labelled rows -> token ids -> padded batches.

Every example is `[bos] + tokens`, cut to `model.max_length`. The bos token is
the [CLS]-style first token a `pooling="cls"` transformer reads; the other
models simply see one more token. A WordPiece tokenizer (an imported BERT's)
gets the rows BERT was trained on instead: `[CLS] tokens [SEP]`, the tokens
cut to `max_length - 2` so that [SEP] always ends the row. Training and the
exported SavedModel encode text with the same `encode_texts`, so serving sees
exactly the training ids.

Batches are padded with id 0 to their own longest row, with rows grouped into
length buckets (`tf.data`'s `bucket_by_sequence_length`): SST-2 sentences
average ~13 tokens, so padding every batch to a 64-token context would spend
most of the compute on padding. XLA and TPUs want static shapes, so with
`static_shapes=True` every batch is padded to `max_length` instead.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tfllm.data.corpus import Corpus, bundled_paths, read_documents
from tfllm.data.labels import LabelVocab
from tfllm.data.sources import bad_row_policy
from tfllm.data.tokenizer import Tokenizer
from tfllm.errors import DataError

# Bundled labelled sets: name -> (format, text field, label field).
BUNDLED_LABELLED = {"sst2": ("tsv", "sentence", "label")}


@dataclasses.dataclass
class LabelledSplits:
    """Rows for training, eval (a file or a held-out part of train) and an optional test file."""

    train: Corpus
    eval: Corpus | None
    test: Corpus | None
    train_source: str
    eval_source: str


def _subset(corpus: Corpus, index: np.ndarray) -> Corpus:
    return Corpus(
        texts=[corpus.texts[i] for i in index],
        labels=[corpus.labels[i] for i in index] if corpus.labels is not None else None,
        sources=[corpus.sources[i] for i in index],
    )


def hold_out(corpus: Corpus, fraction: float, seed: int = 0) -> tuple[Corpus, Corpus]:
    """Splits off a random `fraction` of the rows for eval (fixed seed: reproducible)."""
    n = len(corpus)
    n_eval = round(n * fraction)
    if n_eval < 1 or n - n_eval < 1:
        raise DataError(
            f"config.data.eval_fraction: {fraction} of {n} rows leaves an empty split; "
            "give config.data.eval_path or more rows"
        )
    order = np.random.default_rng(seed).permutation(n)
    return _subset(corpus, np.sort(order[n_eval:])), _subset(corpus, np.sort(order[:n_eval]))


def load_labelled_splits(data: ml_collections.ConfigDict) -> LabelledSplits:
    """Reads the labelled train / eval / test rows the config names."""
    policy = bad_row_policy(data)
    if data.train_path:
        fmt, text_field, label_field = data.format, data.text_field, data.label_field
        paths = {"train": data.train_path, "dev": data.eval_path, "test": data.get("test_path", "")}
        names = {
            "train": "config.data.train_path",
            "dev": "config.data.eval_path",
            "test": "config.data.test_path",
        }
        train_source = data.train_path
    else:
        if data.dataset not in BUNDLED_LABELLED:
            raise DataError(f"config.data.dataset: {data.dataset!r} has no labels")
        fmt, text_field, label_field = BUNDLED_LABELLED[data.dataset]
        paths = bundled_paths(data.dataset)
        names = {split: f"bundled {data.dataset} {split}" for split in paths}
        train_source = f"bundled:{data.dataset}"

    def read(split: str) -> Corpus | None:
        if not paths.get(split):
            return None
        return read_documents(
            paths[split], fmt, text_field, label_field, what=names[split], **policy
        )

    train, evaluation = read("train"), read("dev")
    eval_source = names["dev"] if evaluation is not None else ""
    if evaluation is None and float(data.eval_fraction) > 0:
        train, evaluation = hold_out(train, float(data.eval_fraction))
        eval_source = f"{data.eval_fraction:.0%} of the training rows"
    return LabelledSplits(train, evaluation, read("test"), train_source, eval_source)


def ends_with_sep(tokenizer: Tokenizer) -> bool:
    """Whether rows end with [SEP]: WordPiece (BERT) tokenizers, whose models expect it."""
    return getattr(tokenizer, "TYPE", "") == "wordpiece"


def wrap_pieces(tokenizer: Tokenizer, pieces: tf.RaggedTensor, max_length: int) -> tf.RaggedTensor:
    """Ragged piece ids -> model rows of at most `max_length`: `[bos] + pieces` (the
    pieces alone for a tokenizer without bos, bos_id -1), or `[CLS] + pieces + [SEP]`
    for a WordPiece tokenizer (pieces cut first, [SEP] kept)."""
    pieces = tf.cast(pieces, tf.int32)
    rows = pieces.nrows()
    if tokenizer.bos_id < 0:
        return pieces[:, :max_length]
    bos = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(tokenizer.bos_id, tf.int32)))
    if not ends_with_sep(tokenizer):
        return tf.concat([bos, pieces], axis=1)[:, :max_length]
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
    sep = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(tokenizer.eos_id, tf.int32)))
    return tf.concat([bos, pieces[:, : max_length - 2], sep], axis=1)


def encode_texts(tokenizer: Tokenizer, texts: tf.Tensor, max_length: int) -> tf.RaggedTensor:
    """Strings [B] -> ragged int32 ids (`wrap_pieces`), at most `max_length` per row.

    Runs in the graph: the SavedModel calls it on raw request strings.
    """
    return wrap_pieces(tokenizer, tokenizer.tokenize(texts), max_length)


def pad_ids(ids: tf.RaggedTensor) -> tf.Tensor:
    """Ragged ids -> dense [B, longest row], padded with id 0 on the right."""
    return ids.to_tensor(default_value=0)


@dataclasses.dataclass
class EncodedSplit:
    """Token ids and class ids of one split, ready for `make_classification_dataset`."""

    ids: tf.RaggedTensor
    labels: np.ndarray
    truncated: int  # rows longer than max_length (cut)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.ids.row_lengths().numpy())) if len(self) else 0.0


def encode_split(
    tokenizer: Tokenizer,
    corpus: Corpus,
    vocab: LabelVocab,
    max_length: int,
    what: str,
    chunk: int = 4096,
) -> EncodedSplit:
    """Tokenizes a labelled corpus (in chunks, so memory stays flat on large files)."""
    labels = vocab.encode(corpus.labels or [], corpus.sources, what=what)
    parts, truncated = [], 0
    for start in range(0, len(corpus.texts), chunk):
        batch = tf.constant(corpus.texts[start : start + chunk], tf.string)
        pieces = tf.cast(tokenizer.tokenize(batch), tf.int32)
        specials = 2 if ends_with_sep(tokenizer) else 1
        too_long = pieces.row_lengths() + specials > max_length
        truncated += int(tf.reduce_sum(tf.cast(too_long, tf.int32)))
        parts.append(wrap_pieces(tokenizer, pieces, max_length))
    if truncated:
        logging.warning(
            "%s: %d of %d rows are longer than config.model.max_length=%d tokens and were cut",
            what,
            truncated,
            len(corpus),
            max_length,
        )
    ids = tf.concat(parts, axis=0) if parts else tf.ragged.constant([], tf.int32, ragged_rank=1)
    return EncodedSplit(ids, labels, truncated)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """ "Balanced" weights n / (C * n_c) (sklearn's definition); absent classes get 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def _bucket_boundaries(max_length: int) -> list[int]:
    """Length buckets 8, 16, 32, ... below max_length (upper bounds, exclusive)."""
    bounds, b = [], 8
    while b < max_length:
        bounds.append(b + 1)
        b *= 2
    return bounds


def make_classification_dataset(
    split: EncodedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    repeat: bool,
    seed: int = 0,
    max_length: int | None = None,
    static_shapes: bool = False,
    drop_remainder: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of (ids int32 [b, T], labels int32 [b]).

    With `input_context`, pipeline i keeps every n-th example (disjoint data
    per input pipeline) and `batch_size` is the per-replica batch.
    """
    n = len(split)
    shards = input_context.num_input_pipelines if input_context else 1
    if n // shards < batch_size and drop_remainder:
        across = f" across {shards} input pipelines" if shards > 1 else ""
        raise DataError(
            f"training split too small: {n} examples, need at least {batch_size * shards} "
            f"for one batch of {batch_size}{across}"
        )
    ids, labels = split.ids, tf.constant(split.labels)
    # Shuffle and shard example indices; gathering a row of the ragged ids by
    # index yields a dense 1-D tensor, which `padded_batch` needs.
    dataset = tf.data.Dataset.range(n)
    if input_context is not None and shards > 1:
        dataset = dataset.shard(shards, input_context.input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(min(n, 100_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(
        lambda i: (ids[i], labels[i]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if static_shapes:
        if max_length is None:
            raise ValueError("static_shapes needs max_length")
        dataset = dataset.padded_batch(
            batch_size, padded_shapes=([max_length], []), drop_remainder=drop_remainder
        )
    elif shuffle and max_length:
        bounds = _bucket_boundaries(max_length)
        dataset = dataset.bucket_by_sequence_length(
            lambda ids, label: tf.shape(ids)[0],
            bucket_boundaries=bounds,
            bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
            drop_remainder=drop_remainder,
        )
    else:
        dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    if input_context is not None:  # Already sharded above; do not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
