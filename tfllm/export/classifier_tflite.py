"""TFLite / LiteRT export for classifiers: token ids in, probabilities out, tokenizer beside.

    classify(token_ids: int32[batch, max_length]) -> {"probabilities": float32[batch, C]}

Rows are encoded as in training (`encode_texts`: `[bos] + tokens`, cut to
`max_length`) and right-padded with the pad id to `max_length`; every tfllm
classifier reads only real positions, so the fixed length changes no logit
(the export checks that too). The batch dimension is dynamic (LiteRT resizes
the input per call). Next to `model.tflite` the export directory holds what a
runner needs: `tokenizer.model`, `labels.json` and `classifier.json`;
`tfllm.inference.classifier_tflite_runner.LiteRTClassifier` is that runner, using
numpy + sentencepiece + ai_edge_litert only. A classifier on an imported BERT
ships its WordPiece files (`vocab.txt`, `tokenizer.json`) in place of
`tokenizer.model`; its rows are `[CLS] pieces [SEP]` (see the runner).

Why the tokenizer is not inside the .tflite (measured with tensorflow-text
2.21.1, TF 2.21, ai-edge-litert 2.3.0, on the SST-2 run's BPE tokenizer):

- `tf_text.SentencepieceTokenizer` (what training uses): with builtins the
  converter fails with "error: ... 'tf.SentencepieceOp' op is neither a
  custom op nor a flex op" (and the same for 'tf.SentencepieceTokenizeOp').
  As a custom op it converts, then LiteRT fails at `allocate_tensors`:
  "Encountered unresolved custom op: SentencepieceOp. ... Node number 0
  (SentencepieceOp) failed to prepare."; as a Flex (SELECT_TF_OPS) op:
  "Select TensorFlow op(s), included in the given model, is(are) not
  supported by this interpreter. Make sure you apply/link the Flex delegate
  before inference." (the pip LiteRT ships no Flex delegate).
- `tf_text.FastSentencepieceTokenizer(model_proto)`, the TFLite-ready one:
  with builtins the converter fails: "error: 'tf.TFText>FastSentencepieceTokenize'
  op is neither a custom op nor a flex op". With `allow_custom_ops=True` it
  converts, but LiteRT's `Interpreter` has no `custom_op_registerers`
  argument (only the deprecated `tf.lite.python.interpreter.
  InterpreterWithCustomOps` can load TF-Text's kernels) and fails:
  "RuntimeError: Encountered unresolved custom op:
  TFText>FastSentencepieceTokenize. ... Node number 0
  (TFText>FastSentencepieceTokenize) failed to prepare."
- Worse, its ids are wrong for our tokenizers even in TensorFlow (and in
  `InterpreterWithCustomOps`, which gives the same ids): it segments like a
  unigram model, so with a BPE model (our default) 463 of 506 rows (500
  SST-2 sentences + 6 probes) got different ids than
  `SentencepieceTokenizer`; with a unigram model only the row needing byte
  fallback differed ("☕" became <unk>).

So the SentencePiece proto ships beside the model and the runner tokenizes
with the `sentencepiece` package, which gives exactly training's ids (checked
on every verification row at export time).

Verification (in a temp dir, before anything is renamed into place): the
`.tflite` runs the first `verify_examples` eval rows (train rows if the run
has no eval split) and is compared with the Keras model on identical ids.
`quantize=none` must agree within `FLOAT_TOLERANCE` with identical labels;
quantized modes must lose at most `ACCURACY_DROP_TOLERANCE[mode]` accuracy
points on those rows (max |Δp| is recorded). A failure raises `VerificationError`
and writes nothing.

int8 and the transformer's attention. Plain full-integer quantization cost
the SST-2 transformer 4.5 accuracy points (eval 88.9% -> 84.4%; more
calibration rows did not help) and took tiny test transformers to chance.
The quantization debugger shows why: attention scores are masked (padding
and causal mask) with a huge negative constant before the softmax, so the
calibrated range of the score tensor is that wide (int8 scale 3.9e6 on
SST-2, 9e35 on a tiny model) and every real score rounds to the same value:
attention becomes uniform. The transformer's int8 export therefore keeps the
attention core in float (`INT8_FLOAT_OPS`: batch matmuls, the mask select,
softmax, the head transposes/reshapes, and MUL, because the converter may
fuse the query scaling into the score matmul, making its output the masked
tensor; LayerNorm's multiplies go float with it). These ops hold no weights:
every weight stays int8 (same file size) and the loss drops to ~0.05 point
on eval. Selective quantization is the converter's own
(`QuantizationDebugger`'s op denylist).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.classification_data import (
    encode_texts,
    ends_with_sep,
    load_labelled_splits,
    pad_ids,
)
from tfllm.data.tokenizer_kinds import tokenizer_files
from tfllm.export import litert
from tfllm.export.verified import VerificationError
from tfllm.inference.classifier_tflite_runner import (
    CONFIG_FILE,
    LABELS_FILE,
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
# Largest accuracy loss, in points (2.0 = two percentage points, the unit of
# `--max_accuracy_drop`), vs Keras on the same rows, each quantized mode may
# cost. Measured on the SST-2 CNN / MLP / fine-tuned transformer (docs/edge.md):
# float16 flipped no label anywhere; dynamic and int8 lost at most 0.5 point on
# a full split and 0.8 point (2 rows) on the 256 default verification rows,
# while the failure int8 must catch (see below) costs 4.5 points or more. A
# 256-row check moves in steps of 0.4 point, hence the margins.
ACCURACY_DROP_TOLERANCE = {"none": 0.0, "float16": 0.5, "dynamic": 2.0, "int8": 2.0}
REPRESENTATIVE_ROWS = 128
# Op types kept in float by the int8 export, per model (see the module docstring).
INT8_FLOAT_OPS = {
    "transformer_classifier": litert.INT8_ATTENTION_FLOAT_OPS,
    "bert_classifier": litert.INT8_ATTENTION_FLOAT_OPS,
    "llama_classifier": litert.INT8_ATTENTION_FLOAT_OPS,
}
KERAS_BATCH = 64


def encode_padded(tokenizer: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Strings -> int32 [N, max_length]: `encode_texts` rows right-padded with id 0
    (every tfllm classifier's padding, `pad_ids`; a byte-level BPE's own pad token
    can be a real id such as SmolLM2's `<|im_end|>`)."""
    ragged = encode_texts(tokenizer, tf.constant(texts, tf.string), max_length)
    return ragged.to_tensor(default_value=0, shape=[None, max_length]).numpy()


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
    model: keras.Model,
    quantize: str,
    representative: np.ndarray | None = None,
    float_ops: tuple[str, ...] = (),
) -> tuple[bytes, dict[str, Any]]:
    """Keras classifier -> `.tflite` flatbuffer (via a temp SavedModel) and conversion notes.

    `float_ops` (int8 only) are op types left in float, see `INT8_FLOAT_OPS`.
    """
    dataset = None
    if quantize == "int8":
        if representative is None or not len(representative):
            raise litert.ExportError("--quantize=int8 needs representative training rows")

        def dataset():
            for row in representative:
                yield [row[None, :]]

    with tempfile.TemporaryDirectory() as scratch:
        build_archive(model).write_out(scratch, verbose=False)
        return litert.convert(scratch, [SIGNATURE], quantize, dataset, float_ops)


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
    diff_tolerance = (
        max_abs_diff
        if max_abs_diff is not None
        else (FLOAT_TOLERANCE if quantize == "none" else None)
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
        keras_accuracy, artifact_accuracy = (
            _accuracy(reference, labels),
            _accuracy(artifact, labels),
        )
        drop = keras_accuracy - artifact_accuracy
        # Batch-1 latency through the signature runner, one thread: what a
        # single-request edge caller sees.
        one, row = LiteRTClassifier(os.path.dirname(path), num_threads=1), ids[:1]
        record = {
            "task": "classification",
            "check": (
                f"probabilities within {diff_tolerance} of Keras and identical labels"
                if quantize == "none"
                else f"accuracy at most {drop_tolerance:g} points below Keras on the same rows"
                + (f", probabilities within {diff_tolerance}" if diff_tolerance is not None else "")
            ),
            "examples": len(texts),
            "max_abs_diff": diff,
            "label_agreement": agreement,
            "accuracy": artifact_accuracy,
            "keras_accuracy": keras_accuracy,
            "accuracy_drop": drop,
            "tolerance": {
                "max_abs_diff": diff_tolerance,
                "max_accuracy_drop_points": drop_tolerance,
            },
            "padding_max_abs_diff": padding_diff,
            "tokenizer_mismatches": tokenizer_mismatches,
            "latency_batch1": {**litert.latency(lambda: one.predict_proba_ids(row)), "threads": 1},
            "signature": runner.signature(),
            "dynamic_batch": runner.dynamic_batch,
            "class_names": list(trained.labels.names),
        }
        problems = []
        if tokenizer_mismatches:
            problems.append(f"{tokenizer_mismatches} row(s) tokenized differently by the runner")
        if padding_diff > FLOAT_TOLERANCE:
            problems.append(f"Keras output depends on padding (max |Δp| {padding_diff:.3g})")
        if diff_tolerance is not None and diff > diff_tolerance:
            problems.append(f"max |Δp| {diff:.3g} (tolerance {diff_tolerance:g})")
        if quantize == "none" and agreement < 1.0:
            problems.append(f"{round((1 - agreement) * len(texts))} label(s) differ")
        if drop * 100 > drop_tolerance + 1e-9:
            problems.append(
                f"accuracy {artifact_accuracy:.2%} vs Keras {keras_accuracy:.2%} "
                f"(drop {drop * 100:.2f} points > {drop_tolerance:g})"
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
    without an eval split, like the SavedModel export). `max_abs_diff` (max
    |Δp|) and `max_accuracy_drop` (in accuracy points) override the per-mode
    defaults. Returns the `verification.json` record.
    """

    if quantize not in litert.QUANTIZE_MODES:
        raise litert.ExportError(
            f"--quantize: must be one of {', '.join(litert.QUANTIZE_MODES)}, got {quantize!r}"
        )
    if verify_examples < 1:
        raise litert.ExportError(f"--verify_examples: must be >= 1, got {verify_examples}")
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
        representative = encode_padded(
            tokenizer, [splits.train.texts[i] for i in index], max_length
        )
    float_ops = INT8_FLOAT_OPS.get(trained.config.model.name, ())
    blob, notes = convert_classifier(model, quantize, representative, float_ops)
    if representative is not None:
        notes["representative_rows"] = len(representative)
    runner_config = {
        "format": "tfllm-litert-classifier",
        "model": trained.config.model.name,
        "signature": SIGNATURE,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "max_length": max_length,
        "pad_id": 0,  # what every tfllm classifier masks (encode_padded)
        "bos_id": int(tokenizer.bos_id),
        "num_classes": trained.labels.num_classes,
        "encoding": (
            "[CLS] + wordpiece ids + [SEP], cut to max_length, right-padded with pad_id"
            if ends_with_sep(tokenizer)
            else "[bos] + sentencepiece ids, cut to max_length, right-padded with pad_id"
        ),
    }
    extra_files = {
        # SentencePiece: TOKENIZER_FILE alone; an imported WordPiece: vocab.txt + tokenizer.json.
        **tokenizer_files(tokenizer),
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
    verify = make_verify(trained, texts, labels, quantize, max_abs_diff, max_accuracy_drop, target)
    return litert.write_verified_tflite(
        target, blob, verify, quantize=quantize, extra_files=extra_files, notes=notes
    )


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
