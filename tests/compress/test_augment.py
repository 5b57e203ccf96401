"""Transfer-set augmentation: what an augmented row may and may not be, checked row by row."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfllm.compress.augment import AugmentSettings, RowFormat, augment_rows
from tfllm.compress.distill import distillation_loss

CLS, SEP, MASK = 101, 102, 103
WORDPIECE = RowFormat(mask_id=MASK, bos_id=CLS, sep_id=SEP)


def _rows(count: int, width: int = 24, seed: int = 0) -> np.ndarray:
    """WordPiece-shaped rows `[CLS] pieces [SEP] 0...`, 0 to width - 2 distinct pieces each."""
    rng = np.random.default_rng(seed)
    rows = np.zeros([count, width], np.int32)
    for i in range(count):
        n = int(rng.integers(0, width - 1))
        rows[i, : n + 2] = [CLS, *range(1000 + 100 * i, 1000 + 100 * i + n), SEP]
    return rows


def _augment(rows, settings, row_format=WORDPIECE, seed=(7, 3)):
    out, chosen = augment_rows(tf.constant(rows), tf.constant(seed), settings, row_format)
    return out.numpy(), chosen.numpy()


def test_augmented_rows_are_masked_ngrams_of_their_own_row():
    rows = _rows(400)
    out, chosen = _augment(rows, AugmentSettings(rows=0.5, mask=0.2, ngram=0.5))
    content = (rows != 0).sum(1) - 2
    assert not chosen[content == 0].any()  # nothing to augment in "[CLS] [SEP]"
    assert 0.4 < chosen[content > 0].mean() < 0.6
    np.testing.assert_array_equal(out[~chosen], rows[~chosen])
    cut = masked = pieces = 0
    for before, after in zip(rows[chosen], out[chosen], strict=True):
        length = int((after != 0).sum())
        assert after[0] == CLS and after[length - 1] == SEP and (after[length:] == 0).all()
        kept = after[1 : length - 1]
        original = before[1 : int((before != 0).sum()) - 1]
        assert 1 <= len(kept) <= len(original) and SEP not in kept and CLS not in kept
        if len(kept) < len(original):
            cut += 1
            assert len(kept) <= 5
        # Unmasked pieces sit where a contiguous span of the original has them.
        first = int(np.flatnonzero(kept != MASK)[0]) if (kept != MASK).any() else None
        if first is not None:
            offset = int(np.flatnonzero(original == kept[first])[0]) - first
            span = original[offset : offset + len(kept)]
            assert offset >= 0 and len(span) == len(kept)
            np.testing.assert_array_equal(kept[kept != MASK], span[kept != MASK])
        masked += int((kept == MASK).sum())
        pieces += len(kept)
    assert 0.15 < cut / chosen.sum() < 0.5  # cut at 0.5 (less when the row is 1 piece)
    assert 0.15 < masked / pieces < 0.25


def test_nothing_changes_without_augmentation_and_draws_follow_the_seed():
    rows = _rows(64)
    out, chosen = _augment(rows, AugmentSettings(rows=0.0))
    np.testing.assert_array_equal(out, rows)
    assert not chosen.any()
    out, chosen = _augment(rows, AugmentSettings(rows=1.0, mask=0.0, ngram=0.0))
    np.testing.assert_array_equal(out, rows)  # chosen, but no rule fired
    assert chosen.sum() == ((rows != 0).sum(1) > 2).sum()
    settings = AugmentSettings(rows=0.5)
    first = _augment(rows, settings, seed=(1, 10))
    again = _augment(rows, settings, seed=(1, 10))
    other = _augment(rows, settings, seed=(1, 11))
    np.testing.assert_array_equal(first[0], again[0])
    assert (first[0] != other[0]).any()


@pytest.mark.parametrize(
    ("row_format", "row"),
    [
        (RowFormat(mask_id=1), [5, 6, 7, 8, 9, 0, 0]),  # pieces alone
        (RowFormat(mask_id=1, bos_id=2), [2, 5, 6, 7, 8, 9, 0]),  # [bos] + pieces
    ],
)
def test_rows_without_sep_keep_their_layout(row_format, row):
    rows = np.array([row] * 200, np.int32)
    out, chosen = _augment(rows, AugmentSettings(rows=1.0, mask=0.3, ngram=1.0), row_format)
    assert chosen.all()
    lead = 1 if row_format.bos_id >= 0 else 0
    for after in out:
        length = int((after != 0).sum())
        assert 1 <= length - lead <= 5 and (after[length:] == 0).all()
        if lead:
            assert after[0] == 2
        assert set(after[lead:length]) <= {1, 5, 6, 7, 8, 9}


def test_augmented_rows_carry_only_the_soft_loss():
    rng = np.random.default_rng(0)
    student, teacher = (tf.constant(rng.normal(size=(4, 3)), tf.float32) for _ in range(2))
    targets = tf.constant([0, 1, 2, 0])
    soft_only = tf.constant([True, False, True, False])
    mixed = distillation_loss(targets, student, teacher, 2.0, 0.5, soft_only).numpy()
    plain = distillation_loss(targets, student, teacher, 2.0, 0.5).numpy()
    soft = distillation_loss(targets, student, teacher, 2.0, 0.0).numpy()
    np.testing.assert_allclose(mixed, np.where(soft_only.numpy(), soft, plain), rtol=1e-6)
