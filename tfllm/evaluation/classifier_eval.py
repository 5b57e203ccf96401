"""Evaluating a trained classifier on labelled rows: predictions -> the full metric set.

`tfllm-train` calls it once at the end of training and `tfllm-evaluate` on
any split or file, so both report the same numbers the same way.
"""

from __future__ import annotations

import keras

from tfllm.data.classification_data import EncodedSplit
from tfllm.data.labels import LabelVocab
from tfllm.evaluation.classification import classification_metrics, save_confusion_matrix_png
from tfllm.training.tasks import predict_probabilities


def evaluate_encoded(
    model: keras.Model,
    split: EncodedSplit,
    vocab: LabelVocab,
    *,
    batch_size: int,
    max_length: int,
    png_path: str | None = None,
    title: str = "Confusion matrix",
) -> dict:
    """Accuracy, P/R/F1, confusion matrix, ROC-AUC and log loss of `model` on `split`."""
    probabilities = predict_probabilities(model, split, batch_size, max_length=max_length)
    metrics = classification_metrics(split.labels, probabilities, vocab.names)
    if png_path:
        save_confusion_matrix_png(metrics["confusion_matrix"], vocab.names, png_path, title=title)
    return metrics
