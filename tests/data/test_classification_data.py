"""The classifier input pipeline: encoding, splits, batching, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfllm.config import base_config
from tfllm.data.classification_data import (
    EncodedSplit,
    class_weights,
    encode_split,
    encode_texts,
    hold_out,
    load_labelled_splits,
    make_classification_dataset,
    pad_ids,
)
from tfllm.data.corpus import Corpus
from tfllm.data.labels import LabelVocab
from tfllm.data.tokenizer import Tokenizer
from tfllm.errors import DataError

TEXTS = [f"the film was {'good' if i % 2 else 'bad'} and {'fun ' * (i % 7)}" for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXTS, vocab_size=300, seed=0)


def test_encode_prepends_bos_and_cuts_to_max_length(tokenizer):
    ids = encode_texts(tokenizer, tf.constant(["good fun fun fun", ""]), max_length=4)
    rows = ids.to_list()
    assert rows[0][0] == tokenizer.bos_id and len(rows[0]) == 4
    assert rows[0][1:] == tokenizer.encode("good fun fun fun")[:3]
    assert rows[1] == [tokenizer.bos_id]  # an empty request still classifies
    dense = pad_ids(ids).numpy()
    assert dense.shape == (2, 4) and dense[1, 1:].tolist() == [0, 0, 0]


def test_encode_split_counts_truncated_rows(tokenizer):
    corpus = Corpus(texts=["good", "bad " * 50], labels=["1", "0"], sources=["f:2", "f:3"])
    split = encode_split(tokenizer, corpus, LabelVocab(["0", "1"]), 8, "test")
    assert split.truncated == 1
    assert split.labels.tolist() == [1, 0]
    assert max(split.ids.row_lengths().numpy()) == 8


def test_hold_out_is_disjoint_reproducible_and_complete():
    corpus = Corpus(texts=[str(i) for i in range(100)], labels=["a", "b"] * 50, sources=[""] * 100)
    train, evaluation = hold_out(corpus, 0.2)
    assert len(train) == 80 and len(evaluation) == 20
    assert set(train.texts) | set(evaluation.texts) == set(corpus.texts)
    assert hold_out(corpus, 0.2)[1].texts == evaluation.texts


def test_bundled_sst2_splits():
    config = base_config()
    config.data.dataset = "sst2"
    splits = load_labelled_splits(config.data)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (60614, 6735, 872)
    assert set(splits.train.labels) == {"0", "1"}


def test_labelled_file_without_eval_holds_out_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(f'{{"review": "row {i}", "stars": "{i % 3}"}}\n' for i in range(50)),
        encoding="utf-8",
    )
    config = base_config()
    config.data.update(
        dict(train_path=str(path), format="jsonl", text_field="review", label_field="stars")
    )
    config.data.eval_fraction = 0.2
    splits = load_labelled_splits(config.data)
    assert (len(splits.train), len(splits.eval), splits.test) == (40, 10, None)


def _split(n: int, lengths: list[int]) -> EncodedSplit:
    rows = [[2] + [5] * (lengths[i % len(lengths)] - 1) for i in range(n)]
    return EncodedSplit(tf.ragged.constant(rows, tf.int32), np.arange(n, dtype=np.int32) % 2, 0)


def test_training_batches_are_bucketed_and_padded_to_their_longest_row():
    split = _split(256, [3, 5, 40, 60])
    dataset = make_classification_dataset(split, 16, shuffle=True, repeat=True, max_length=64)
    for ids, labels in dataset.take(20):
        assert ids.shape[0] == 16 and labels.shape == (16,)
        lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1).numpy()
        assert ids.shape[1] == lengths.max()  # no column of pure padding
        # one bucket per batch: short and long rows do not share padding
        assert lengths.max() <= 8 or lengths.min() > 8


def test_static_shapes_pad_to_max_length():
    dataset = make_classification_dataset(
        _split(64, [3, 9]), 8, shuffle=True, repeat=False, max_length=32, static_shapes=True
    )
    assert all(ids.shape == (8, 32) for ids, _ in dataset)


def test_eval_order_is_kept_and_nothing_dropped():
    split = _split(37, [2, 4, 6])
    dataset = make_classification_dataset(
        split, 8, shuffle=False, repeat=False, max_length=16, drop_remainder=False
    )
    labels = np.concatenate([y.numpy() for _, y in dataset])
    assert labels.tolist() == split.labels.tolist()


def test_input_pipelines_get_disjoint_examples():
    split = EncodedSplit(
        tf.ragged.constant([[2, i + 10] for i in range(32)], tf.int32), np.zeros(32, np.int32), 0
    )
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = make_classification_dataset(
            split, 4, shuffle=False, repeat=False, max_length=8, input_context=ctx
        )
        seen.append({int(t) for ids, _ in dataset for t in ids.numpy()[:, 1]})
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 32


def test_too_small_training_split_is_a_clear_error():
    with pytest.raises(DataError, match="need at least 64"):
        make_classification_dataset(_split(10, [3]), 64, shuffle=True, repeat=True, max_length=8)


def test_balanced_class_weights():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (C * n_c): 4 / (3 * 3), 4 / (3 * 1); an absent class gets 0
    np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)
