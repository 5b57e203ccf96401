"""SavedModel export for classifiers: raw strings in, label + probabilities out.

    serving_default(texts: string[None]) -> {
        "label": string[None],            # the most probable class name
        "class_id": int32[None],
        "probabilities": float32[None, C],  # softmax, columns in class-id order
    }

The tokenizer runs in the graph (the same `encode_texts` as training: bos +
tokens, cut to the model's max_length, padded to the longest request row),
and the class names travel as an asset, `assets/labels.txt` (one per line, in
class-id order), read by a lookup table, so a serving system can show the
label vocabulary without loading the model. The artifact is written to a temp
directory, reloaded, compared with the Keras model on real eval rows, and only
then renamed into place with its `verification.json`.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.classification_data import encode_texts, load_labelled_splits, pad_ids
from tfllm.data.labels import LabelVocab
from tfllm.data.tokenizer import Tokenizer
from tfllm.export.verified import VerificationError, write_verified_saved_model

if TYPE_CHECKING:
    from tfllm.inference.loading import TrainedModel

LABELS_ASSET = "labels.txt"
# Softmax outputs of the reloaded graph may differ from eager Keras in the last
# float32 bits (different kernel fusion); anything larger is a real mismatch.
PROBABILITY_TOLERANCE = 1e-5


class _ClassNames(tf.Module):
    """The label vocabulary as a SavedModel asset plus a class-id -> name table."""

    def __init__(self, asset_path: str) -> None:
        super().__init__(name="class_names")
        self.asset = tf.saved_model.Asset(asset_path)
        initializer = tf.lookup.TextFileInitializer(
            self.asset,
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value="")

    def lookup(self, class_ids: tf.Tensor) -> tf.Tensor:
        return self.table.lookup(tf.cast(class_ids, tf.int64))


def build_classifier_archive(
    model: keras.Model, tokenizer: Tokenizer, names: _ClassNames
) -> keras.export.ExportArchive:
    """The ExportArchive with `serving_default` (strings -> label, class_id, probabilities)."""
    max_length = int(model.max_length)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    archive.track(names)

    def serving_default(texts):
        ids = pad_ids(encode_texts(tokenizer, texts, max_length))
        probabilities = tf.nn.softmax(tf.cast(model(ids, training=False), tf.float32), axis=-1)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "label": names.lookup(class_id),
            "class_id": class_id,
            "probabilities": probabilities,
        }

    archive.add_endpoint(
        "serving_default",
        serving_default,
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
    )
    return archive


def keras_probabilities(
    model: keras.Model, tokenizer: Tokenizer, texts: list[str], max_length: int
) -> np.ndarray:
    """The reference: the Keras model on the same encoding, eagerly."""
    ids = pad_ids(encode_texts(tokenizer, tf.constant(texts, tf.string), max_length))
    return tf.nn.softmax(tf.cast(model(ids, training=False), tf.float32), axis=-1).numpy()


def export_classifier_saved_model(
    model: keras.Model,
    tokenizer: Tokenizer,
    vocab: LabelVocab,
    target: str,
    *,
    verify_texts: list[str],
    verify_labels: np.ndarray | None = None,
) -> dict:
    """Writes the classifier SavedModel to `target` only if it reproduces the Keras model.

    `verify_texts` (e.g. a few hundred eval rows) go through both the reloaded
    artifact and the Keras model; probabilities must agree within
    `PROBABILITY_TOLERANCE` and every predicted label must be identical.
    With `verify_labels`, the artifact's own accuracy on them is recorded.
    """
    bad = [n for n in vocab.names if "\n" in n or "\r" in n]
    if bad:
        raise VerificationError(f"label {bad[0]!r} contains a line break; cannot be an asset line")
    if not verify_texts:
        raise VerificationError("no texts to verify the export with")
    max_length = int(model.max_length)

    def verify(loaded) -> dict:
        out = loaded.signatures["serving_default"](texts=tf.constant(verify_texts, tf.string))
        exported = out["probabilities"].numpy()
        exported_labels = [s.decode("utf-8") for s in out["label"].numpy()]
        reference = keras_probabilities(model, tokenizer, verify_texts, max_length)
        reference_labels = [vocab.names[i] for i in reference.argmax(axis=-1)]
        max_diff = float(np.max(np.abs(exported - reference)))
        label_mismatches = sum(
            a != b for a, b in zip(exported_labels, reference_labels, strict=True)
        )
        if max_diff > PROBABILITY_TOLERANCE or label_mismatches:
            raise VerificationError(
                f"SavedModel output differs from Keras: max |Δp| {max_diff:.3g} "
                f"(tolerance {PROBABILITY_TOLERANCE}), {label_mismatches} label(s) differ; "
                f"nothing written to {target}"
            )
        record = {
            "task": "classification",
            "check": (
                f"serving_default probabilities within {PROBABILITY_TOLERANCE} of Keras and "
                "identical labels"
            ),
            "examples": len(verify_texts),
            "max_abs_diff": max_diff,
            "tolerance": PROBABILITY_TOLERANCE,
            "label_mismatches": label_mismatches,
            "match": True,
            "class_names": vocab.names,
        }
        if verify_labels is not None:
            predicted = out["class_id"].numpy()
            record["accuracy"] = float(np.mean(predicted == np.asarray(verify_labels)))
        return record

    with tempfile.TemporaryDirectory() as scratch:
        asset_path = os.path.join(scratch, LABELS_ASSET)
        with open(asset_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in vocab.names))
        archive = build_classifier_archive(model, tokenizer, _ClassNames(asset_path))
        return write_verified_saved_model(target, archive, verify)


def export_trained_classifier(trained: TrainedModel, target: str, verify_examples: int) -> dict:
    """`tfllm-export` for a classifier workdir: verified on its first eval rows.

    The eval split is the data the run never trained on; a run without one is
    verified on training rows (parity does not need unseen data, only the
    recorded accuracy does).
    """

    splits = load_labelled_splits(trained.config.data)
    rows = splits.eval if splits.eval is not None else splits.train
    texts = rows.texts[:verify_examples]
    labels = trained.labels.encode(rows.labels[:verify_examples], rows.sources)
    return export_classifier_saved_model(
        trained.model,
        trained.tokenizer,
        trained.labels,
        target,
        verify_texts=texts,
        verify_labels=labels,
    )
