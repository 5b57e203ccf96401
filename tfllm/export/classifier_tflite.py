"""TFLite / LiteRT export for classifiers: token ids in, probabilities out, tokenizer beside.

    classify(token_ids: int32[batch, max_length]) -> {"probabilities": float32[batch, C]}

Rows are encoded as in training (`encode_texts`: `[bos] + tokens`, cut to
`max_length`) and right-padded with the pad id to `max_length`; every tfllm
classifier reads only real positions, so the fixed length changes no logit
(the export checks that too). The batch dimension is dynamic (LiteRT resizes
the input per call). Next to `model.tflite` the export directory holds what a
runner needs: `tokenizer.model`, `labels.json` and `classifier.json`;
`tfllm.inference.litert_classifier.LiteRTClassifier` is that runner, using
numpy + sentencepiece + ai_edge_litert only.

Why the tokenizer is not inside the .tflite (measured with tensorflow-text
2.21.1, TF 2.21, ai-edge-litert 2.3.0, on the SST-2 run's BPE tokenizer):

- `tf_text.SentencepieceTokenizer` (what training uses) has no TFLite kernel.
- `tf_text.FastSentencepieceTokenizer(model_proto)`, the TFLite-ready one,
  converts only as a custom op. With builtins alone the converter fails:
  "error: 'tf.TFText>FastSentencepieceTokenize' op is neither a custom op nor
  a flex op". With `allow_custom_ops=True` it converts, but LiteRT's
  `Interpreter` (no `custom_op_registerers` argument, no TF-Text kernels)
  cannot run it: "RuntimeError: Encountered unresolved custom op:
  TFText>FastSentencepieceTokenize. ... Node number 0
  (TFText>FastSentencepieceTokenize) failed to prepare." (also with
  SELECT_TF_OPS: the pip LiteRT has no Flex delegate either).
- Worse, its ids are wrong for our tokenizers even in TensorFlow: it
  segments like a unigram model, so on a BPE model 463 of 506 SST-2 rows got
  different ids than `SentencepieceTokenizer`; on a unigram model only rows
  needing byte fallback differed ("☕" became <unk>).

So the SentencePiece proto ships beside the model and the runner tokenizes
with the `sentencepiece` package, which gives exactly training's ids (checked
on every verification row at export time).

Verification (in a temp dir, before anything is renamed into place): the
`.tflite` runs the first `verify_examples` eval rows (train rows if the run
has no eval split) and is compared with the Keras model on identical ids.
`quantize=none` must agree within `FLOAT_TOLERANCE` with identical labels;
quantized modes must lose at most `ACCURACY_DROP_TOLERANCE[mode]` accuracy
on those rows (max |Δp| is recorded). A failure raises `VerificationError`
and writes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.classification_data import encode_texts, pad_ids
from tfllm.export import litert
from tfllm.export.saved_model import VerificationError
from tfllm.inference.litert_classifier import (
    CONFIG_FILE,
    LABELS_FILE,
    TOKENIZER_FILE,
    LiteRTClassifier,
)

if TYPE_CHECKING:
    from tfllm.data.tokenizer import Tokenizer
    from tfllm.inference.loading import TrainedModel

SIGNATURE = "classify"
INPUT_NAME = "token_ids"
OUTPUT_NAME = "probabilities"
# float32 TFLite kernels differ from TF's in the last bits (other fusion and
# summation order); measured max |Δp| on SST-2 is ~1e-6. Anything near 1e-4
# is a real mismatch.
FLOAT_TOLERANCE = 1e-4
# Largest accuracy loss (fraction, vs Keras on the same rows) each quantized
# mode may cost. Measured on the SST-2 CNN / MLP / fine-tuned transformer (see
# docs/edge.md): float16 flips almost no label, dynamic and int8 cost a few
# tenths of a point; the margins absorb the noise of a few hundred rows.
ACCURACY_DROP_TOLERANCE = {"none": 0.0, "float16": 0.005, "dynamic": 0.02, "int8": 0.02}
REPRESENTATIVE_ROWS = 128
KERAS_BATCH = 64


def encode_padded(tokenizer: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Strings -> int32 [N, max_length]: `encode_texts` rows right-padded with the pad id."""
    ragged = encode_texts(tokenizer, tf.constant(texts, tf.string), max_length)
    return ragged.to_tensor(default_value=tokenizer.pad_id, shape=[None, max_length]).numpy()


def keras_probabilities(model: keras.Model, ids: np.ndarray) -> np.ndarray:
    """Softmax of the Keras model on exactly these ids, in batches."""
    parts = [
        tf.nn.softmax(tf.cast(model(ids[i : i + KERAS_BATCH], training=False), tf.float32), -1)
        for i in range(0, len(ids), KERAS_BATCH)
    ]
    return np.concatenate([p.numpy() for p in parts], axis=0)


def build_archive(model: keras.Model) -> keras.export.ExportArchive:
    """The ExportArchive with one `classify` endpoint (ids -> probabilities).

    An ExportArchive (not a plain tf.Module) so the Keras 3 variables are
    saved initialised (DESIGN §2).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)

    def classify(token_ids):
        logits = model(token_ids, training=False)
        return {OUTPUT_NAME: tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    archive.add_endpoint(
        SIGNATURE,
        classify,
        input_signature=[tf.TensorSpec([None, int(model.max_length)], tf.int32, name=INPUT_NAME)],
    )
    return archive


def convert_classifier(
    model: keras.Model, quantize: str, representative: np.ndarray | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Keras classifier -> `.tflite` flatbuffer (via a temp SavedModel) and conversion notes."""
    dataset = None
    if quantize == "int8":
        if representative is None or not len(representative):
            raise litert.ExportError("--quantize=int8 needs representative training rows")

        def dataset():
            for row in representative:
                yield [row[None, :]]

    with tempfile.TemporaryDirectory() as scratch:
        build_archive(model).write_out(scratch, verbose=False)
        return litert.convert(scratch, [SIGNATURE], quantize, dataset)


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=-1) == labels))


def make_verify(
    trained: TrainedModel,
    texts: list[str],
    labels: np.ndarray,
    quantize: str,
    max_abs_diff: float | None,
    max_accuracy_drop: float | None,
    target: str,
):
    """The `verify(path)` callback for `litert.write_verified_tflite`."""
    model, tokenizer = trained.model, trained.tokenizer
    max_length = int(model.max_length)
    diff_tolerance = max_abs_diff if max_abs_diff is not None else (
        FLOAT_TOLERANCE if quantize == "none" else None
    )
    drop_tolerance = (
        max_accuracy_drop if max_accuracy_drop is not None else ACCURACY_DROP_TOLERANCE[quantize]
    )

    def verify(path: str) -> dict[str, Any]:
        ids = encode_padded(tokenizer, texts, max_length)
        reference = keras_probabilities(model, ids)
        # The Keras model on rows padded only to their batch's longest row (how
        # training and tfllm-evaluate run it) must give the same answer.
        unpadded = keras_probabilities(
            model, pad_ids(encode_texts(tokenizer, tf.constant(texts), max_length)).numpy()
        )
        padding_diff = float(np.max(np.abs(unpadded - reference)))
        runner = LiteRTClassifier(os.path.dirname(path))
        tokenizer_mismatches = int(np.sum(np.any(runner.encode(texts) != ids, axis=1)))
        artifact = runner.predict_proba_ids(ids)
        diff = float(np.max(np.abs(artifact - reference)))
        agreement = float(np.mean(artifact.argmax(-1) == reference.argmax(-1)))
        keras_accuracy, artifact_accuracy = _accuracy(reference, labels), _accuracy(artifact, labels)
        drop = keras_accuracy - artifact_accuracy
        one = LiteRTClassifier(os.path.dirname(path), num_threads=1)
        row = ids[:1]
        one.predict_proba_ids(row)
        record = {
            "task": "classification",
            "check": (
                f"probabilities within {diff_tolerance} of Keras and identical labels"
                if quantize == "none"
                else f"accuracy at most {drop_tolerance:.3g} below Keras on the same rows"
                + (f", probabilities within {diff_tolerance}" if diff_tolerance is not None else "")
            ),
            "examples": len(texts),
            "max_abs_diff": diff,
            "label_agreement": agreement,
            "accuracy": artifact_accuracy,
            "keras_accuracy": keras_accuracy,
            "accuracy_drop": drop,
            "tolerance": {"max_abs_diff": diff_tolerance, "max_accuracy_drop": drop_tolerance},
            "padding_max_abs_diff": padding_diff,
            "tokenizer_mismatches": tokenizer_mismatches,
            "latency_batch1": {**litert.latency(lambda: one.predict_proba_ids(row)), "threads": 1},
            "signature": runner.signature(),
            "dynamic_batch": runner.dynamic_batch,
            "class_names": list(trained.labels.names),
        }
        problems = []
        if tokenizer_mismatches:
            problems.append(f"{tokenizer_mismatches} row(s) tokenized differently by sentencepiece")
        if padding_diff > FLOAT_TOLERANCE:
            problems.append(f"Keras output depends on padding (max |Δp| {padding_diff:.3g})")
        if diff_tolerance is not None and diff > diff_tolerance:
            problems.append(f"max |Δp| {diff:.3g} (tolerance {diff_tolerance:g})")
        if quantize == "none" and agreement < 1.0:
            problems.append(f"{round((1 - agreement) * len(texts))} label(s) differ")
        if drop > drop_tolerance + 1e-12:
            problems.append(
                f"accuracy {artifact_accuracy:.4f} vs Keras {keras_accuracy:.4f} "
                f"(drop {drop:.4f} > {drop_tolerance:g})"
            )
        record["match"] = not problems
        if problems:
            raise VerificationError(
                f"TFLite ({quantize}) output differs from Keras on {len(texts)} rows: "
                f"{'; '.join(problems)}; nothing written to {target}"
            )
        return record

    return verify


def export_classifier_tflite(
    trained: TrainedModel,
    target: str,
    quantize: str,
    verify_examples: int,
    *,
    max_abs_diff: float | None = None,
    max_accuracy_drop: float | None = None,
) -> dict:
    """Writes `target/model.tflite` (+ tokenizer, labels, runner config) if it matches Keras.

    Verified on the first `verify_examples` eval rows (train rows for a run
    without an eval split, like the SavedModel export). `max_abs_diff` /
    `max_accuracy_drop` override the per-mode defaults. Returns the
    `verification.json` record.
    """
    from tfllm.data.classification_data import load_labelled_splits

    if quantize not in litert.QUANTIZE_MODES:
        raise litert.ExportError(
            f"--quantize: must be one of {', '.join(litert.QUANTIZE_MODES)}, got {quantize!r}"
        )
    if verify_examples < 1:
        raise VerificationError(f"--verify_examples: must be >= 1, got {verify_examples}")
    model, tokenizer = trained.model, trained.tokenizer
    max_length = int(model.max_length)
    splits = load_labelled_splits(trained.config.data)
    rows = splits.eval if splits.eval is not None else splits.train
    texts = rows.texts[:verify_examples]
    labels = trained.labels.encode(
        rows.labels[:verify_examples], rows.sources[:verify_examples], what="verification rows"
    )
    representative = None
    if quantize == "int8":
        rng = np.random.default_rng(0)
        n = min(REPRESENTATIVE_ROWS, len(splits.train))
        index = np.sort(rng.choice(len(splits.train), size=n, replace=False))
        representative = encode_padded(tokenizer, [splits.train.texts[i] for i in index], max_length)
    blob, notes = convert_classifier(model, quantize, representative)
    if representative is not None:
        notes["representative_rows"] = len(representative)
    runner_config = {
        "format": "tfllm-litert-classifier",
        "model": trained.config.model.name,
        "signature": SIGNATURE,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "max_length": max_length,
        "pad_id": int(tokenizer.pad_id),
        "bos_id": int(tokenizer.bos_id),
        "num_classes": trained.labels.num_classes,
        "encoding": "[bos] + sentencepiece ids, cut to max_length, right-padded with pad_id",
    }
    extra_files = {
        TOKENIZER_FILE: tokenizer.model_proto,
        LABELS_FILE: _json_bytes({"names": list(trained.labels.names)}),
        CONFIG_FILE: _json_bytes(runner_config),
    }
    notes = {
        **notes,
        "model": trained.config.model.name,
        "checkpoint": trained.checkpoint,
        "step": trained.step,
        "verify_source": "eval" if splits.eval is not None else "train",
    }
    verify = make_verify(
        trained, texts, labels, quantize, max_abs_diff, max_accuracy_drop, target
    )
    return litert.write_verified_tflite(
        target, blob, verify, quantize=quantize, extra_files=extra_files, notes=notes
    )


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
