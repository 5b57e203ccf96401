"""Model outputs for evaluation: token cross-entropy, class probabilities,
quick classifier metrics, on one device or sharded over any strategy.

Training's periodic evals, `tfllm-evaluate` and the pipeline all read model
outputs through these functions, so every caller reports the same numbers
the same way. With a strategy, each batch is cut into rows over the replicas
(`tfllm.distribute.rows.RowSharder`) and the results come back in row order,
so the metrics equal one device's.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.classification_data import EncodedSplit, make_classification_dataset
from tfllm.distribute.rows import RowSharder


def token_cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-position cross entropy in float32 (Keras' loss, logits input)."""
    return keras.losses.sparse_categorical_crossentropy(
        targets, tf.cast(logits, tf.float32), from_logits=True
    )


def predict_probabilities(
    model: keras.Model,
    split: EncodedSplit,
    batch_size: int,
    *,
    max_length: int,
    static_shapes: bool = False,
    max_batches: int = 0,
) -> np.ndarray:
    """Softmax probabilities [N, C] for a split, in order (no example dropped)."""
    dataset = make_classification_dataset(
        split,
        batch_size,
        shuffle=False,
        repeat=False,
        max_length=max_length,
        static_shapes=static_shapes,
        drop_remainder=False,
    )

    probabilities = _probability_fn(model)
    parts = []
    for i, (ids, _) in enumerate(dataset):
        if max_batches and i >= max_batches:
            break
        parts.append(probabilities(ids).numpy())
    return np.concatenate(parts, axis=0)


_PROBABILITY_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probability_fn(model: keras.Model):
    """One traced softmax(model(ids)) per model, reused by every periodic eval."""
    if model not in _PROBABILITY_FNS:

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def probabilities(ids):
            return tf.nn.softmax(tf.cast(model(ids, training=False), tf.float32), axis=-1)

        _PROBABILITY_FNS[model] = probabilities
    return _PROBABILITY_FNS[model]


def quick_classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Loss, accuracy and macro F1, cheap enough for every periodic eval."""
    eps = 1e-12
    picked = probabilities[np.arange(len(labels)), labels]
    predictions = probabilities.argmax(axis=-1)
    f1s = []
    for c in range(num_classes):
        tp = float(np.sum((predictions == c) & (labels == c)))
        fp = float(np.sum((predictions == c) & (labels != c)))
        fn = float(np.sum((predictions != c) & (labels == c)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {
        "eval_loss": float(-np.mean(np.log(np.maximum(picked, eps)))),
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": float(np.mean(f1s)),
    }


_PROBABILITY_SHARDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probability_sharder(strategy, model: keras.Model) -> RowSharder:
    """One `RowSharder` of softmax(model(ids)) per (model, strategy), so the periodic
    evals of a training run and its final report reuse one traced function."""
    cached = _PROBABILITY_SHARDERS.get(model)
    if cached is None or cached.strategy is not strategy:

        def per_row(ids):
            return tf.nn.softmax(tf.cast(model(ids, training=False), tf.float32), axis=-1)

        cached = _PROBABILITY_SHARDERS[model] = RowSharder(strategy, per_row)
    return cached


def predict_probabilities_sharded(
    strategy,
    model: keras.Model,
    split,
    batch_size: int,
    *,
    max_length: int,
    max_batches: int = 0,
) -> np.ndarray:
    """`predict_probabilities` with each batch sharded over replicas:
    the same batches (in order, none dropped), softmax(model(ids)) per row, [N, C];
    only the first `max_batches` batches when > 0 (periodic evals during training)."""
    sharder = _probability_sharder(strategy, model)
    dataset = make_classification_dataset(
        split, batch_size, shuffle=False, repeat=False, max_length=max_length, drop_remainder=False
    )
    if max_batches:
        dataset = dataset.take(max_batches)
    return np.concatenate([sharder(ids.numpy()) for ids, _ in dataset], axis=0)
