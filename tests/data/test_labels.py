"""Label vocabulary: ordering, round trip through the workdir, unknown labels."""

from __future__ import annotations

import pytest

from tfllm.data.labels import LabelVocab
from tfllm.errors import DataError, WorkdirError


def test_integer_labels_are_ordered_numerically():
    vocab = LabelVocab.learn(["10", "2", "-1", "2", "10"])
    assert vocab.names == ["-1", "2", "10"]  # not the string order "-1", "10", "2"
    assert vocab.encode(["2", "10", "-1"]).tolist() == [1, 2, 0]


def test_string_labels_are_sorted_and_independent_of_file_order():
    a = LabelVocab.learn(["pos", "neg", "neutral"])
    b = LabelVocab.learn(["neutral", "pos", "neg", "pos"])
    assert a == b
    assert a.names == ["neg", "neutral", "pos"]


def test_equal_integers_with_other_spelling_map_to_one_class():
    vocab = LabelVocab.learn(["0", "1"])
    assert vocab.encode(["01", "+1", "0"]).tolist() == [1, 1, 0]


def test_round_trip_through_workdir(tmp_path):
    vocab = LabelVocab.learn(["spam", "ham", "eggs"])
    vocab.save(str(tmp_path))
    loaded = LabelVocab.load(str(tmp_path))
    assert loaded == vocab
    assert loaded.num_classes == 3
    assert loaded.encode(["spam", "eggs"]).tolist() == vocab.encode(["spam", "eggs"]).tolist()


def test_unknown_label_names_file_and_line():
    vocab = LabelVocab.learn(["neg", "pos"])
    with pytest.raises(DataError, match=r"eval.tsv:7: unknown label 'neutral'"):
        vocab.encode(["pos", "neutral"], ["eval.tsv:6", "eval.tsv:7"], what="--data")


def test_single_label_is_rejected():
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        LabelVocab.learn(["pos", "pos"])


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(WorkdirError, match="no labels.json"):
        LabelVocab.load(str(tmp_path))
    (tmp_path / "labels.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkdirError, match="unreadable label vocabulary"):
        LabelVocab.load(str(tmp_path))
