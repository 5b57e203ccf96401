"""Tests for tfllm.data.lm_data: eos-joined streams and window datasets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.corpus import bundled_paths, read_documents
from tfllm.data.lm_data import (
    eval_dataset,
    make_lm_dataset,
    num_windows,
    split_ids,
    tokenize_documents,
)
from tfllm.data.tokenizer import Tokenizer
from tfllm.errors import DataError


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    text = read_documents(bundled_paths("shakespeare")["train"], "text").texts[0][:20_000]
    return Tokenizer.train([text], vocab_size=384)


def _batches(dataset, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    if limit is not None:
        dataset = dataset.take(limit)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_tokenize_documents_joins_with_one_eos(tokenizer):
    docs = ["First line\nsecond line\n", "  ünïcödé 😀\n\nlast", "x", "no newline at all " * 600]
    ids = tokenize_documents(tokenizer, docs, batch_size=2)
    assert ids.dtype == np.int32 and ids.ndim == 1
    expected = []
    for doc in docs[:3]:
        expected += tokenizer.encode(doc) + [tokenizer.eos_id]
    assert ids[: len(expected)].tolist() == expected
    assert ids[-1] == tokenizer.eos_id
    assert int(np.sum(ids == tokenizer.eos_id)) == len(docs)
    assert tokenizer.pad_id not in ids
    # The long single-line document (cut into pieces) still decodes exactly.
    assert tokenizer.decode(ids[len(expected) : -1].tolist()) == docs[3]


def test_windows_are_shifted_contiguous_slices():
    ids = np.arange(1000, dtype=np.int32)  # ids[i] == i, so a window's start is its first id.
    seq_len, batch = 16, 4
    batches = _batches(make_lm_dataset(ids, seq_len, batch, shuffle=False, repeat=False))
    assert len(batches) == num_windows(1000, seq_len) // batch == 15
    starts = []
    for x, y in batches:
        assert x.shape == y.shape == (batch, seq_len) and x.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y, strict=True):
            start = row_x[0]
            np.testing.assert_array_equal(row_x, ids[start : start + seq_len])
            np.testing.assert_array_equal(row_y, ids[start + 1 : start + seq_len + 1])
            starts.append(start)
    assert starts == list(range(0, 60 * seq_len, seq_len))


def test_shuffle_is_seeded_and_varies_by_epoch():
    ids = np.arange(2010, dtype=np.int32)
    seq_len, batch = 10, 5
    per_epoch = (2010 - seq_len) // seq_len // batch  # 200 windows, 40 whole batches per epoch.
    first = _batches(
        make_lm_dataset(ids, seq_len, batch, shuffle=True, repeat=True, seed=3), 2 * per_epoch
    )
    again = _batches(
        make_lm_dataset(ids, seq_len, batch, shuffle=True, repeat=True, seed=3), 2 * per_epoch
    )
    other = _batches(make_lm_dataset(ids, seq_len, batch, shuffle=True, repeat=True, seed=4), 1)
    assert all((a[0] == b[0]).all() for a, b in zip(first, again, strict=True))
    assert not (first[0][0] == other[0][0]).all()
    epochs = [
        np.concatenate([x[:, 0] for x, _ in first[e * per_epoch : (e + 1) * per_epoch]])
        for e in (0, 1)
    ]
    for starts in epochs:
        assert len(set(starts.tolist())) == len(starts)  # Each window at most once per epoch.
        assert len(set((starts % seq_len).tolist())) == 1  # One offset per epoch.
        assert starts.max() + seq_len + 1 <= len(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    for x, y in first:
        np.testing.assert_array_equal(x + 1, y)


def test_sharding_gives_disjoint_windows():
    ids = np.arange(3000, dtype=np.int32)
    seq_len, batch = 8, 4
    starts = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        for shuffle in (False, True):
            dataset = make_lm_dataset(
                ids, seq_len, batch, shuffle=shuffle, repeat=False, seed=1, input_context=context
            )
            batches = _batches(dataset)
            if shuffle:
                starts.append({int(s) for x, _ in batches for s in x[:, 0]})
            else:
                plain = [int(s) for x, _ in batches for s in x[:, 0]]
                assert plain[:3] == [
                    pipeline * seq_len,
                    (pipeline + 2) * seq_len,
                    (pipeline + 4) * seq_len,
                ]
    assert len(starts[0]) == len(starts[1]) == 184  # 374 windows // 2 pipelines, whole batches.
    assert not starts[0] & starts[1]


def test_eos_between_documents_and_no_padding(tokenizer):
    docs = [f"Document number {i}: some words here.\nAnd a second line." for i in range(40)]
    ids = tokenize_documents(tokenizer, docs)
    seq_len = 32
    for x, y in _batches(make_lm_dataset(ids, seq_len, 2, shuffle=True, repeat=False)):
        assert tokenizer.pad_id not in x and tokenizer.pad_id not in y
    texts = [tokenizer.decode(x[0].tolist()) for x, _ in _batches(eval_dataset(ids, seq_len, 1))]
    joined = "".join(texts)  # eos decodes to "", so this is the documents back to back.
    assert joined == "".join(docs)[: len(joined)]
    eos_positions = np.flatnonzero(ids == tokenizer.eos_id)
    assert len(eos_positions) == len(docs)
    for doc, end in zip(docs[:5], eos_positions[:5], strict=True):
        assert tokenizer.decode(ids[end - len(tokenizer.encode(doc)) : end].tolist()) == doc


def test_too_small_corpus_errors():
    with pytest.raises(DataError) as e:
        make_lm_dataset(np.arange(100, dtype=np.int32), 16, 8, shuffle=False, repeat=True)
    assert str(e.value) == (
        "corpus too small: 100 tokens, need at least 129 for one batch of 8 windows of 16+1 tokens"
    )
    with pytest.raises(DataError, match="eval split too small: 10 tokens"):
        eval_dataset(np.arange(10, dtype=np.int32), 16, 1)
    # Exactly enough for one batch works, and yields exactly one.
    assert len(_batches(eval_dataset(np.arange(129, dtype=np.int32), 16, 8))) == 1


def test_split_ids_holds_out_the_tail():
    ids = np.arange(1000, dtype=np.int32)
    train, held = split_ids(ids, 0.1, seq_len=16)
    assert len(train) == 900 and len(held) == 100
    np.testing.assert_array_equal(np.concatenate([train, held]), ids)
    assert held[0] == 900
    with pytest.raises(DataError, match="eval part has 10 of 100 tokens, need at least 17"):
        split_ids(ids[:100], 0.1, seq_len=16)
    with pytest.raises(DataError, match="eval_fraction"):
        split_ids(ids, 1.5)


def test_num_windows():
    assert num_windows(17, 16) == 1
    assert num_windows(16, 16) == 0
    assert num_windows(1000, 16) == 62
