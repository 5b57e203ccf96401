"""Byte-pair merging in the graph, in exactly the order Hugging Face's BPE merges.

HF merges, in each word, the adjacent pair with the lowest merge rank, ties
going to the leftmost, one at a time, until no pair has a merge. Doing that
one merge per loop step would take as many steps as the longest word has
merges. Here each step merges, in every word at once, *all* the
non-overlapping occurrences (left to right) of the word's lowest-rank pair --
the same result whenever no merge made along the way creates a pair of a
lower rank. Merges for which that can happen (a token with a lower-rank merge
of its own that uses it, possible when two merges make the same string) are
flagged "unsafe" when the table is built, and for those only the leftmost
occurrence is merged in a step, as HF does. Words leave the loop as soon as
they have no merge left, so long words do not keep short ones busy.

The merge table maps a pair (left id * base + right id) to
rank << 32 | new id << 1 | unsafe, so one lookup gives everything and the
smallest value in a word is its lowest-rank pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

NO_MERGE = np.iinfo(np.int64).max


def merge_table_entries(
    merges: Sequence[tuple[int, int, int]], base: int
) -> tuple[np.ndarray, np.ndarray]:
    """(left id, right id, new id) in rank order -> (keys, packed values) for the table.

    A pair listed twice keeps its last rank, as in HF (its merge map is built
    from the list in order).
    """
    by_pair: dict[tuple[int, int], tuple[int, int]] = {}
    for rank, (left, right, new) in enumerate(merges):
        by_pair[(left, right)] = (rank, new)
    first_use: dict[int, int] = {}  # token id -> lowest rank of a merge that uses it
    for (left, right), (rank, _) in by_pair.items():
        for token in (left, right):
            if rank < first_use.get(token, NO_MERGE):
                first_use[token] = rank
    keys = np.empty(len(by_pair), np.int64)
    values = np.empty(len(by_pair), np.int64)
    for i, ((left, right), (rank, new)) in enumerate(by_pair.items()):
        unsafe = int(first_use.get(new, NO_MERGE) < rank)
        keys[i] = left * base + right
        values[i] = (rank << 32) | (new << 1) | unsafe
    if not by_pair:  # A table cannot be empty; no pair has key -1.
        return np.array([-1], np.int64), np.array([NO_MERGE], np.int64)
    return keys, values


def byte_pair_merge(
    words: tf.Tensor,
    byte_ids: tf.Tensor,
    table: tf.lookup.StaticHashTable,
    base: int,
    fuse_id: int = -1,
) -> tf.RaggedTensor:
    """[U] byte strings -> ragged [U, None] int32 token ids (int64 row splits).

    `byte_ids` [256] gives each byte's token, the start of every word (-1:
    the byte is dropped); a run of `fuse_id` in a word becomes one (HF's fuse_unk).
    """
    chars = tf.strings.bytes_split(words)
    values = tf.reshape(tf.io.decode_raw(chars.values, tf.uint8), [-1])
    sym = tf.gather(byte_ids, tf.cast(values, tf.int32))
    seg = tf.cast(chars.value_rowids(), tf.int32)
    keep = sym >= 0
    if fuse_id >= 0:
        repeat = (sym[1:] == fuse_id) & (sym[:-1] == fuse_id) & (seg[1:] == seg[:-1])
        keep = keep & tf.concat([[True], tf.logical_not(repeat)], 0)
    sym, seg = tf.boolean_mask(sym, keep), tf.boolean_mask(seg, keep)
    pos = tf.range(tf.size(sym))
    done = [
        tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None], infer_shape=False)
        for _ in range(3)
    ]

    def body(step, sym, seg, pos, done_sym, done_seg, done_pos):
        n = tf.size(sym)
        left = sym[:-1]
        same = tf.equal(seg[:-1], seg[1:])
        keys = tf.cast(left, tf.int64) * base + tf.cast(sym[1:], tf.int64)
        packed = tf.where(same, table.lookup(keys), NO_MERGE)
        starts = tf.concat([[True], tf.logical_not(same)], 0)
        word = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # dense index of each symbol's word
        num_words = word[-1] + 1
        pair_word = word[:-1]
        lowest = tf.math.unsorted_segment_min(packed, pair_word, num_words)  # NO_MERGE if none
        finished = tf.equal(tf.gather(lowest, word), NO_MERGE)
        candidate = tf.logical_and(
            tf.equal(packed, tf.gather(lowest, pair_word)), tf.not_equal(packed, NO_MERGE)
        )
        index = tf.range(n - 1)
        # Unsafe merges: only the leftmost occurrence in the word.
        leftmost = tf.math.unsorted_segment_min(tf.where(candidate, index, n), pair_word, num_words)
        is_leftmost = tf.logical_and(candidate, tf.equal(index, tf.gather(leftmost, pair_word)))
        # Safe merges: every other pair in a run of overlapping occurrences (a, a, a, ...).
        previous = tf.concat([[False], candidate[:-1]], 0)
        run_start = tf.logical_and(candidate, tf.logical_not(previous))
        run = tf.maximum(tf.cumsum(tf.cast(run_start, tf.int32)) - 1, 0)
        start = tf.gather(tf.concat([tf.boolean_mask(index, run_start), [0]], 0), run)
        alternate = tf.logical_and(candidate, tf.equal((index - start) % 2, 0))
        unsafe = tf.equal(tf.bitwise.bitwise_and(packed, 1), 1)
        selected = tf.where(unsafe, is_leftmost, alternate)
        new_id = tf.cast(
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed, 1), 0x7FFFFFFF), tf.int32
        )
        merged = tf.concat([tf.where(selected, new_id, left), sym[-1:]], 0)
        removed = tf.concat([[False], selected], 0)
        keep = tf.logical_not(tf.logical_or(removed, finished))
        return (
            step + 1,
            tf.boolean_mask(merged, keep),
            tf.boolean_mask(seg, keep),
            tf.boolean_mask(pos, keep),
            done_sym.write(step, tf.boolean_mask(sym, finished)),
            done_seg.write(step, tf.boolean_mask(seg, finished)),
            done_pos.write(step, tf.boolean_mask(pos, finished)),
        )

    _, _, _, _, done_sym, done_seg, done_pos = tf.while_loop(
        lambda step, sym, *_: tf.size(sym) > 0,
        body,
        (tf.constant(0), sym, seg, pos, *done),
        shape_invariants=(
            tf.TensorShape([]),
            *[tf.TensorShape([None])] * 3,
            *[tf.TensorShape(None)] * 3,
        ),
    )
    done_pos = done_pos.concat()
    order = tf.argsort(done_pos)
    return tf.RaggedTensor.from_value_rowids(
        tf.gather(done_sym.concat(), order),
        tf.cast(tf.gather(done_seg.concat(), order), tf.int64),
        nrows=tf.size(words, out_type=tf.int64),
        validate=False,
    )
