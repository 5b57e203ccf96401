"""Classifiers behind `tfllm-serve`: texts in, label / class id / probabilities out.

A job's payload is its list of texts; the batcher puts the texts of several
requests into one forward pass and each job gets its own rows back, as
`{"done": True, "predictions": [{"label", "class_id", "probabilities"}, ...]}`,
the row format TF Serving gives for the exported classifier's three outputs.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import tensorflow as tf

from tfllm.data.labels import LabelVocab
from tfllm.export.classifier_saved_model import keras_probabilities
from tfllm.export.verified import load_serving
from tfllm.inference.loading import load_trained
from tfllm.serving.batcher import Job


def _predictions(labels: list[str], probabilities: np.ndarray) -> list[dict]:
    ids = probabilities.argmax(axis=-1)
    return [
        {"label": labels[int(i)], "class_id": int(i), "probabilities": [float(p) for p in row]}
        for i, row in zip(ids, probabilities, strict=True)
    ]


def _answer(jobs: list[Job], predictions: list[dict]) -> None:
    start = 0
    for job in jobs:
        job.emit({"done": True, "predictions": predictions[start : start + job.rows]})
        start += job.rows


class KerasClassifier:
    """A classifier workdir's checkpoint, on the encoding its exports use."""

    kind = "classifier"
    backend = "keras"

    def __init__(self, workdir: str) -> None:
        trained = load_trained(workdir)
        self.model, self.tokenizer, self.config = trained.model, trained.tokenizer, trained.config
        self.labels = list(trained.labels.names)
        self.max_length = int(self.model.max_length)
        self.checkpoint = trained.checkpoint

    def warm_up(self) -> None:
        self._probabilities(["warm up"])

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        return keras_probabilities(self.model, self.tokenizer, texts, self.max_length)

    def run_batch(self, jobs: list[Job], more=None) -> None:
        texts = [t for job in jobs for t in job.payload]
        _answer(jobs, _predictions(self.labels, self._probabilities(texts)))


class SavedModelClassifier:
    """`W/export/saved_model`'s `serving_default` (texts -> label, class_id, probabilities)."""

    kind = "classifier"
    backend = "saved_model"

    def __init__(self, workdir: str, config: ml_collections.ConfigDict) -> None:
        path = os.path.join(workdir, "export", "saved_model")
        self._loaded = load_serving(path)
        self.signature = self._loaded.signatures["serving_default"]
        self.config = config
        self.labels = list(LabelVocab.load(workdir).names)
        self.max_length = int(config.model.max_length)
        self.checkpoint = path

    def warm_up(self) -> None:
        self.signature(texts=tf.constant(["warm up"]))

    def run_batch(self, jobs: list[Job], more=None) -> None:
        texts = [t for job in jobs for t in job.payload]
        out = self.signature(texts=tf.constant(texts, tf.string))
        _answer(jobs, _predictions(self.labels, out["probabilities"].numpy()))


def load_classifier_engine(workdir: str, backend: str, config: ml_collections.ConfigDict):
    if backend == "keras":
        return KerasClassifier(workdir)
    return SavedModelClassifier(workdir, config)
