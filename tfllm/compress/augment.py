"""Transfer-set augmentation for distilling a classifier (Tang et al. 2019, §3.2).

A student learns the teacher's function only where it sees the teacher's
outputs. SST-2's 60,614 training rows are the phrases of ~6,900 sentences: a
CNN student matches its MiniLM teacher on them (93 % on held-out phrases) and
still trails it by 3–5 points on whole test sentences. Tang et al. ("Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks") widen the
transfer set with rows made from the training rows — words masked, words
swapped for others of the same part of speech, n-grams sampled — and label them
with the teacher. This module applies the masking and n-gram rules to the
token ids of a batch inside the training step: the teacher already runs in
every distillation step, so the new rows' labels cost nothing, and every step
sees fresh rows instead of a fixed augmented file. The POS rule is left out:
no part-of-speech tagger ships with the toolkit or installs offline.

Rules act on tokenizer pieces, not words (a WordPiece word may be cut
mid-word); the special ids ([CLS]/bos first, [SEP] last, padding) stay where
the model expects them. Draws are stateless, keyed by (seed, replica, step):
a resumed run sees the rows the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """How much of each batch is augmented, and how."""

    rows: float  # fraction of each training batch replaced by augmented copies (0 = off)
    mask: float = 0.1  # per piece of an augmented row: replaced by the mask id (Tang: p_mask)
    ngram: float = 0.25  # per augmented row: cut to a random n-gram (Tang: p_ng)
    max_ngram: int = 5  # n is drawn uniformly from 1..max_ngram (Tang: 1..5)


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """Where a tokenizer's rows keep their special ids (tfllm.data.classification_data)."""

    mask_id: int  # [MASK] for WordPiece; the unknown id for tokenizers without one
    bos_id: int = -1  # first id of every row ([CLS] / bos), -1 = none
    sep_id: int = -1  # last real id of every row ([SEP] for WordPiece), -1 = none
    pad_id: int = 0  # right padding


def augment_rows(
    ids: tf.Tensor, seed: tf.Tensor, settings: AugmentSettings, row_format: RowFormat
) -> tuple[tf.Tensor, tf.Tensor]:
    """Right-padded ids [B, T] -> (ids with some rows augmented, bool [B] which ones).

    An augmented row is first cut, with probability `settings.ngram`, to n
    consecutive content pieces (n uniform in 1..max_ngram, at most the row's
    content), then each content piece is masked with probability
    `settings.mask`. Rows without content pieces are never chosen. `seed` is a
    stateless seed, int [2].
    """
    ids = tf.convert_to_tensor(ids)
    batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
    choose, cut, size, start, masked = (
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)[i] for i in range(5)
    )
    lead = 1 if row_format.bos_id >= 0 else 0
    trail = 1 if row_format.sep_id >= 0 else 0
    lengths = tf.reduce_sum(tf.cast(ids != row_format.pad_id, tf.int32), axis=1)
    content = tf.maximum(lengths - lead - trail, 0)

    # n-gram: keep pieces [start, start + n) of the content, n = content when not cut.
    is_cut = tf.random.stateless_uniform([batch], cut) < settings.ngram
    n = tf.random.stateless_uniform([batch], size, 1, settings.max_ngram + 1, tf.int32)
    n = tf.where(is_cut, tf.minimum(n, content), content)
    offset = tf.random.stateless_uniform([batch], start) * tf.cast(content - n + 1, tf.float32)
    offset = tf.minimum(tf.cast(offset, tf.int32), content - n)
    positions = tf.range(width)[tf.newaxis, :]
    source = tf.clip_by_value(positions + offset[:, tf.newaxis], 0, width - 1)
    kept = tf.gather(ids, source, batch_dims=1)
    end = lead + n[:, tf.newaxis]  # first position after the kept pieces
    is_piece = (positions >= lead) & (positions < end)
    row = tf.where(is_piece, kept, row_format.pad_id)
    if lead:
        row = tf.where(positions == 0, row_format.bos_id, row)
    if trail:
        row = tf.where(positions == end, row_format.sep_id, row)

    hide = is_piece & (tf.random.stateless_uniform([batch, width], masked) < settings.mask)
    row = tf.where(hide, row_format.mask_id, row)

    chosen = (tf.random.stateless_uniform([batch], choose) < settings.rows) & (content > 0)
    return tf.where(chosen[:, tf.newaxis], tf.cast(row, ids.dtype), ids), chosen
