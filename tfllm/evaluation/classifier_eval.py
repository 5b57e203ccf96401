"""Evaluating a trained classifier on labelled rows: predictions -> the full metric set.

`tfllm-train` calls it once at the end of training and `tfllm-evaluate` on
any split or file, so both report the same numbers the same way. With
`tfllm-evaluate --backend=litert` the probabilities come from the exported
`.tflite` instead (tokenized by its runner, exactly as a deployment would),
and go through the same metrics.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import keras

from tfllm.data.classification_data import EncodedSplit, encode_split
from tfllm.data.corpus import Corpus
from tfllm.data.labels import LabelVocab
from tfllm.errors import WorkdirError
from tfllm.evaluation.classification import classification_metrics, save_confusion_matrix_png
from tfllm.evaluation.predict import predict_probabilities, predict_probabilities_sharded
from tfllm.inference.classifier_tflite_runner import LiteRTClassifier
from tfllm.utils.io import atomic_write_json, read_json

if TYPE_CHECKING:
    from tfllm.inference.loading import TrainedModel


def evaluate_encoded(
    model: keras.Model,
    split: EncodedSplit,
    vocab: LabelVocab,
    *,
    batch_size: int,
    max_length: int,
    png_path: str | None = None,
    title: str = "Confusion matrix",
    strategy=None,
) -> dict:
    """Accuracy, P/R/F1, confusion matrix, ROC-AUC and log loss of `model` on `split`.

    With `strategy` (tfllm-evaluate --strategy), every batch is sharded over its
    replicas and the probabilities come back in row order, so the metrics are
    the one-device metrics.
    """
    if strategy is None:
        probabilities = predict_probabilities(model, split, batch_size, max_length=max_length)
    else:
        probabilities = predict_probabilities_sharded(
            strategy, model, split, batch_size, max_length=max_length
        )
    metrics = classification_metrics(split.labels, probabilities, vocab.names)
    if png_path:
        save_confusion_matrix_png(metrics["confusion_matrix"], vocab.names, png_path, title=title)
    return metrics


def evaluate_corpus(
    trained: TrainedModel,
    corpus: Corpus,
    what: str,
    *,
    batch_size: int,
    png_path: str | None = None,
    strategy=None,
) -> tuple[dict, int]:
    """Encodes labelled rows with the run's tokenizer and label vocabulary, then evaluates.

    Returns (metrics, number of examples). Unknown labels raise naming `what` and file:line.
    """
    max_length = int(trained.config.model.max_length)
    split = encode_split(trained.tokenizer, corpus, trained.labels, max_length, what)
    metrics = evaluate_encoded(
        trained.model,
        split,
        trained.labels,
        batch_size=batch_size,
        max_length=max_length,
        png_path=png_path,
        title=f"Confusion matrix: {what}",
        strategy=strategy,
    )
    return metrics, len(split)


def evaluate_corpus_litert(
    trained: TrainedModel,
    corpus: Corpus,
    what: str,
    export_dir: str,
    *,
    batch_size: int,
    png_path: str | None = None,
) -> tuple[dict, int]:
    """`evaluate_corpus` for the `.tflite` in `export_dir`, run by `LiteRTClassifier`.

    The run's label vocabulary maps the rows' labels to class ids; an export
    whose class names differ (made from another run) is an error, not a
    silently permuted confusion matrix.
    """

    classifier = LiteRTClassifier(export_dir)
    if classifier.labels != trained.labels.names:
        raise WorkdirError(
            f"{export_dir}: exported for classes {classifier.labels}, but the run has "
            f"{trained.labels.names} (re-run tfllm-export --format=tflite)"
        )
    labels = trained.labels.encode(corpus.labels or [], corpus.sources, what=what)
    probabilities = classifier.predict_proba(corpus.texts, batch_size=batch_size)
    metrics = classification_metrics(labels, probabilities, trained.labels.names)
    if png_path:
        save_confusion_matrix_png(
            metrics["confusion_matrix"],
            trained.labels.names,
            png_path,
            title=f"Confusion matrix (LiteRT): {what}",
        )
    return metrics, len(labels)


def record_metrics(workdir: str, key: str, metrics: dict, **extra: object) -> str:
    """Merges a split's metrics into `W/metrics.json`; returns its path.

    The eval split's numbers are the top-level keys (those `tfllm-train` writes,
    with `log_loss` as `eval_loss`); any other split goes under `key`.
    """
    path = os.path.join(workdir, "metrics.json")
    saved = read_json(path)
    if key == "eval":
        saved.update({("eval_loss" if k == "log_loss" else k): v for k, v in metrics.items()})
    else:
        saved[key] = {**extra, **metrics}
    atomic_write_json(path, saved)
    return path
