"""Classification metrics checked against numbers worked out by hand.

Expected values are written as fractions from counted TP/FP/FN and counted
(positive, negative) pairs, never taken from scikit-learn itself, so a wrong
argument to sklearn (averaging, label set, zero_division) shows up here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfllm.evaluation.classification import (
    classification_metrics,
    format_metrics_table,
    save_confusion_matrix_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def binary_rows(p1: list[float]) -> list[list[float]]:
    return [[1.0 - p, p] for p in p1]


# Binary case: positives score 0.9, 0.8, 0.4; negatives score 0.7, 0.6, 0.1.
# Predictions (argmax = score > 0.5): [1, 1, 0, 1, 1, 0]
#   class 1: TP = 2 (rows 0, 1), FN = 1 (row 2), FP = 2 (rows 3, 4), TN = 1 (row 5)
BIN_LABELS = [1, 1, 1, 0, 0, 0]
BIN_P1 = [0.9, 0.8, 0.4, 0.7, 0.6, 0.1]


@pytest.fixture
def binary():
    return classification_metrics(BIN_LABELS, binary_rows(BIN_P1), ["neg", "pos"])


def test_binary_counts_accuracy_and_confusion_matrix(binary):
    assert binary["num_examples"] == 6
    assert binary["accuracy"] == pytest.approx(3 / 6)  # rows 0, 1, 5 correct
    # rows = true [neg, pos], columns = predicted [neg, pos]
    assert binary["confusion_matrix"] == [[1, 2], [1, 2]]


def test_binary_per_class_precision_recall_f1(binary):
    pos, neg = binary["per_class"]["pos"], binary["per_class"]["neg"]
    # pos: P = TP/(TP+FP) = 2/4, R = TP/(TP+FN) = 2/3, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    assert pos["precision"] == pytest.approx(1 / 2)
    assert pos["recall"] == pytest.approx(2 / 3)
    assert pos["f1"] == pytest.approx(4 / 7)
    assert pos["support"] == 3
    # neg: predicted neg on rows 2, 5 (one right) -> P = 1/2; true negs 3, 4, 5 -> R = 1/3
    # F1 = 2 * (1/2)(1/3) / (5/6) = 2/5
    assert neg["precision"] == pytest.approx(1 / 2)
    assert neg["recall"] == pytest.approx(1 / 3)
    assert neg["f1"] == pytest.approx(2 / 5)
    assert neg["support"] == 3


def test_binary_macro_micro_weighted(binary):
    assert binary["macro_precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert binary["macro_recall"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert binary["macro_f1"] == pytest.approx((4 / 7 + 2 / 5) / 2)  # = 17/35
    # micro pools counts over both classes: 3 correct of 6 predictions / 6 labels
    assert binary["micro_precision"] == pytest.approx(3 / 6)
    assert binary["micro_recall"] == pytest.approx(3 / 6)
    assert binary["micro_f1"] == pytest.approx(3 / 6)
    # equal supports (3 and 3) -> weighted F1 equals macro F1
    assert binary["weighted_f1"] == pytest.approx((3 * 4 / 7 + 3 * 2 / 5) / 6)


def test_binary_roc_auc_pairwise(binary):
    # 3 x 3 (pos, neg) pairs: 0.9 beats all 3, 0.8 beats all 3, 0.4 beats only 0.1.
    assert binary["roc_auc"] == pytest.approx(7 / 9)
    assert "roc_auc_note" not in binary


def test_binary_roc_auc_tie_counts_half():
    # neg 0.1, 0.5; pos 0.5, 0.8. Pairs: (0.5, 0.1) = 1, (0.5, 0.5) tie = 1/2,
    # (0.8, 0.1) = 1, (0.8, 0.5) = 1 -> 3.5 / 4
    m = classification_metrics([0, 0, 1, 1], binary_rows([0.1, 0.5, 0.5, 0.8]), ["a", "b"])
    assert m["roc_auc"] == pytest.approx(7 / 8)


def test_log_loss_is_mean_negative_log_of_true_class_probability():
    # p(true class) per row: 0.9, 0.8, 0.4, 1-0.7, 1-0.6, 1-0.1
    m = classification_metrics(BIN_LABELS, binary_rows(BIN_P1), ["neg", "pos"])
    p_true = [0.9, 0.8, 0.4, 0.3, 0.4, 0.9]
    expected = sum(-math.log(p) for p in p_true) / 6
    assert m["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_log_loss_clips_zero_probability():
    # Row 1 gives its true class probability 0: clipped to float64 eps, not -inf.
    eps = float(np.finfo(np.float64).eps)
    m = classification_metrics([0, 1], [[1.0, 0.0], [1.0, 0.0]], ["a", "b"])
    assert m["log_loss"] == pytest.approx((-math.log(1 - eps) - math.log(eps)) / 2)


# 3-class case where class "c" is never predicted.
#   labels: [0, 0, 0, 1, 1, 2, 2]
#   preds:  [0, 0, 1, 1, 1, 0, 1]
THREE_LABELS = [0, 0, 0, 1, 1, 2, 2]
THREE_PROBS = [
    [0.6, 0.3, 0.1],
    [0.7, 0.2, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.3, 0.6, 0.1],
    [0.5, 0.1, 0.4],
    [0.1, 0.5, 0.4],
]


def test_three_class_never_predicted_class_and_macro_vs_micro():
    m = classification_metrics(THREE_LABELS, THREE_PROBS, ["a", "b", "c"])
    a, b, c = (m["per_class"][k] for k in "abc")
    # a: predicted rows 0, 1, 5 (2 right) -> P = 2/3; true rows 0, 1, 2 (2 found) -> R = 2/3
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # b: predicted rows 2, 3, 4, 6 (2 right) -> P = 1/2; true rows 3, 4 both found -> R = 1
    #    F1 = 2 * (1/2)(1) / (3/2) = 2/3
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1 / 2, 1.0, 2 / 3))
    # c: never predicted -> precision 0/0 -> 0.0 (zero_division=0); R = 0/2; F1 = 0.0
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)
    assert [a["support"], b["support"], c["support"]] == [3, 2, 2]

    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # 7/18
    assert m["macro_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # 5/9
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # 4/9
    for key in ("micro_precision", "micro_recall", "micro_f1"):
        assert m[key] == pytest.approx(4 / 7)  # 4 correct of 7, pooled
    assert m["macro_f1"] != pytest.approx(m["micro_f1"])
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 3 + 2 * 0) / 7)  # 10/21
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 1, 0]]


def test_class_absent_from_labels_gets_zero_row_and_log_loss_works():
    # Class "c" has no support and is never predicted; it still appears everywhere.
    probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]
    m = classification_metrics([0, 1, 1], probs, ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert m["log_loss"] == pytest.approx((-math.log(0.8) - math.log(0.7) - math.log(0.3)) / 3)
    # a: P = 1/2, R = 1, F1 = 2/3; b: P = 1, R = 1/2, F1 = 2/3; c: 0 -> macro F1 = 4/9
    assert m["macro_f1"] == pytest.approx(4 / 9)


def test_multiclass_one_vs_rest_macro_roc_auc():
    labels = [0, 0, 1, 1, 2, 2]
    probs = [
        [0.6, 0.3, 0.1],
        [0.3, 0.4, 0.3],
        [0.2, 0.5, 0.3],
        [0.5, 0.2, 0.3],
        [0.1, 0.3, 0.6],
        [0.4, 0.2, 0.4],
    ]
    # class 0: pos {0.6, 0.3} vs neg {0.2, 0.5, 0.1, 0.4}: 0.6 beats 4, 0.3 beats 2 -> 6/8
    # class 1: pos {0.5, 0.2} vs neg {0.3, 0.4, 0.3, 0.2}: 0.5 beats 4, 0.2 ties 0.2 -> 4.5/8
    # class 2: pos {0.6, 0.4} vs neg {0.1, 0.3, 0.3, 0.3}: all 8 pairs right -> 8/8
    m = classification_metrics(labels, probs, ["x", "y", "z"])
    assert m["roc_auc"] == pytest.approx((6 / 8 + 4.5 / 8 + 8 / 8) / 3)  # 37/48


def test_multiclass_roc_auc_skips_classes_absent_from_labels():
    labels = [0, 0, 1, 1]
    probs = [[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]]
    # class 0: pos {0.7, 0.4} vs neg {0.5, 0.1}: 2 + 1 -> 3/4
    # class 1: pos {0.3, 0.8} vs neg {0.2, 0.4}: 1 + 2 -> 3/4
    # class 2: no positives -> undefined, left out of the macro mean
    m = classification_metrics(labels, probs, ["x", "y", "z"])
    assert m["roc_auc"] == pytest.approx(3 / 4)
    assert "roc_auc_note" not in m


@pytest.mark.parametrize("num_classes", [2, 3])
def test_roc_auc_none_with_note_when_one_class_present(num_classes):
    probs = [[1.0 / num_classes] * num_classes] * 3
    names = [f"c{k}" for k in range(num_classes)]
    m = classification_metrics([1, 1, 1], probs, names)
    assert m["roc_auc"] is None
    assert isinstance(m["roc_auc_note"], str) and "one class" in m["roc_auc_note"]
    json.dumps(m)


@pytest.mark.parametrize(
    ("labels", "probs", "names", "match"),
    [
        ([0, 1, 0], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "different lengths"),
        ([0, 1], [0.5, 0.5], ["a", "b"], "2-D"),
        ([0, 1], [[[0.5, 0.5]], [[0.5, 0.5]]], ["a", "b"], "2-D"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"], "class names"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"in \[0, 2\)"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"in \[0, 2\)"),
        ([], np.zeros((0, 2)), ["a", "b"], "0 examples"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], ["a", "b"], r"\[0, 1\]"),
        ([0, 1], [[0.2, 0.2], [0.5, 0.5]], ["a", "b"], "sum to 1"),
        ([0, 0.5], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "integer"),
    ],
)
def test_invalid_inputs_raise_value_error(labels, probs, names, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(labels, probs, names)


def _assert_plain(value) -> None:
    """Only builtin types (np.float64 subclasses float, so check exact types)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    else:
        assert type(value) in (int, float, str, type(None)), (value, type(value))


def test_output_is_json_serialisable_plain_python():
    m = classification_metrics(
        np.array(THREE_LABELS, dtype=np.int32),
        np.array(THREE_PROBS, dtype=np.float32),
        ["a", "b", "c"],
    )
    json.loads(json.dumps(m))
    _assert_plain(m)
    assert type(m["num_examples"]) is int
    assert type(m["per_class"]["a"]["support"]) is int
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)


def test_save_confusion_matrix_png_is_valid_and_atomic(tmp_path):
    path = tmp_path / "cm.png"
    path.write_bytes(b"old")  # replaced, not appended to
    save_confusion_matrix_png([[2, 1, 0], [0, 2, 0], [1, 1, 0]], ["a", "b", "c"], path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]


def test_save_confusion_matrix_png_many_classes(tmp_path):
    n = 20
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, size=(n, n))
    names = [f"category_{k}" for k in range(n)]
    path = tmp_path / "sub" / "cm20.png"
    save_confusion_matrix_png(matrix, names, str(path), title="20 classes")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["cm20.png"]


def test_save_confusion_matrix_png_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="3x3"):
        save_confusion_matrix_png([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_format_metrics_table_has_names_and_accuracy():
    m = classification_metrics(THREE_LABELS, THREE_PROBS, ["alpha", "beta", "gamma"])
    text = format_metrics_table(m)
    for name in ("alpha", "beta", "gamma"):
        assert name in text
    assert f"{4 / 7:.4f}" in text
    assert "accuracy" in text and "roc-auc" in text and "log loss" in text
    lines = text.splitlines()
    assert len(lines) > 8


def test_format_metrics_table_shows_undefined_roc_auc():
    m = classification_metrics([0, 0], [[0.9, 0.1], [0.6, 0.4]], ["a", "b"])
    assert "n/a" in format_metrics_table(m)
