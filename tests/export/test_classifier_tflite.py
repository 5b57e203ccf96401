"""Classifier TFLite/LiteRT export: parity with Keras per family, quantize modes, the runner.

The CNN is the session's `trained_classifier` (trained by `tfllm-train`); the
other families are built from the same config and fitted in-process for four
epochs with plain `fit` (enough for non-trivial probabilities, seconds on CPU),
sharing the CNN run's tokenizer and labels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, classifier_config, last_stderr_line, run_cli, synthetic_rows

from tfllm.export.classifier_tflite import (
    ACCURACY_DROP_TOLERANCE,
    FLOAT_TOLERANCE,
    encode_padded,
    export_classifier_tflite,
)

EXPORT_FILES = {"model.tflite", "tokenizer.model", "labels.json", "classifier.json"}
# Strings where two tokenizer implementations could disagree.
TRICKY = [
    "",
    " ",
    "goal",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "naïve café ☕ Ångström",
    "nai\u0308ve (decomposed) vs naïve",  # NFD vs NFC: identity normalization keeps both
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and ½ ™",  # NFKC would fold these; we must not
    "CJK 日本語の文章 中文 한국어",
    "emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
    "Здравствуй, мир",
    "zero\u200bwidth\u00a0nbsp",
    "null\x00byte",
    "goal " * 200,  # far longer than max_length
]


def _load(workdir: str):
    from tfllm.inference.loading import load_trained

    return load_trained(workdir)


def _fitted(labelled_files, workdir: str, name: str, **model_overrides):
    """A TrainedModel of family `name` fitted briefly on the synthetic topics."""
    import keras

    from tfllm.data.classification_data import encode_split, load_labelled_splits
    from tfllm.data.labels import LabelVocab
    from tfllm.data.tokenizer import Tokenizer
    from tfllm.inference.loading import TrainedModel
    from tfllm.models import build_model

    config = classifier_config(labelled_files, name)
    for key, value in model_overrides.items():
        config.model[key] = value
    tokenizer = Tokenizer.load(os.path.join(workdir, "tokenizer"))
    labels = LabelVocab.load(workdir)
    model = build_model(config.model, tokenizer.vocab_size, labels.num_classes)
    train = load_labelled_splits(config.data).train
    split = encode_split(tokenizer, train, labels, int(config.model.max_length), "train")
    model.compile(
        optimizer=keras.optimizers.Adam(0.005),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(split.ids.to_tensor(), split.labels, batch_size=32, epochs=4, verbose=0)
    return TrainedModel(config, model, tokenizer, "in-process", 0, labels, workdir)


@pytest.fixture(scope="module")
def families(trained_classifier, labelled_files) -> dict:
    return {
        "cnn_classifier": _load(trained_classifier),
        "cnn_classifier/max_pool_flatten": _fitted(
            labelled_files,
            trained_classifier,
            "cnn_classifier",
            cnn_pooling="max_pool_flatten",
            conv_widths=[3],
        ),
        # The SST-2 fine-tune's setting: causal attention, last-token pooling.
        "transformer_classifier": _fitted(
            labelled_files,
            trained_classifier,
            "transformer_classifier",
            causal=True,
            pooling="last",
        ),
        "mlp_classifier": _fitted(labelled_files, trained_classifier, "mlp_classifier"),
    }


@pytest.mark.parametrize(
    "family",
    [
        "cnn_classifier",
        "cnn_classifier/max_pool_flatten",
        "transformer_classifier",
        "mlp_classifier",
    ],
)
def test_float_export_matches_keras(families, family, tmp_path):
    from tfllm.export.classifier_saved_model import keras_probabilities
    from tfllm.inference.classifier_tflite_runner import LiteRTClassifier

    trained = families[family]
    target = str(tmp_path / "tflite_none")
    record = export_classifier_tflite(trained, target, "none", 150)
    assert record["match"] is True
    assert record["examples"] == 150  # the whole synthetic eval split
    assert record["max_abs_diff"] <= FLOAT_TOLERANCE
    assert record["label_agreement"] == 1.0
    assert record["accuracy"] == record["keras_accuracy"] > 0.5
    assert record["tokenizer_mismatches"] == 0
    assert record["padding_max_abs_diff"] <= FLOAT_TOLERANCE
    assert set(os.listdir(target)) == EXPORT_FILES | {"verification.json"}
    with open(os.path.join(target, "verification.json"), encoding="utf-8") as f:
        assert json.load(f)["max_abs_diff"] == record["max_abs_diff"]

    # Raw strings through the runner (padded to max_length) equal Keras on rows
    # padded only to the batch's longest row, as in training and evaluation.
    texts = [t for t, _ in synthetic_rows(12, seed=5)] + TRICKY
    runner = LiteRTClassifier(target)
    probabilities = runner.predict_proba(texts, batch_size=7)
    reference = keras_probabilities(
        trained.model, trained.tokenizer, texts, int(trained.config.model.max_length)
    )
    np.testing.assert_allclose(probabilities, reference, atol=FLOAT_TOLERANCE)
    assert runner.predict(texts) == [trained.labels.names[i] for i in reference.argmax(-1)]
    # One row at a time gives the same numbers as inside a batch.
    np.testing.assert_allclose(
        runner.predict_proba(texts[:3], batch_size=1), probabilities[:3], atol=1e-6
    )


def test_signature_contract(families, tmp_path):
    from tfllm.inference.classifier_tflite_runner import LiteRTClassifier

    target = str(tmp_path / "tflite_none")
    record = export_classifier_tflite(families["cnn_classifier"], target, "none", 20)
    expected = {
        "name": "classify",
        "inputs": {"token_ids": {"shape": [-1, 64], "dtype": "int32"}},
        "outputs": {"probabilities": {"shape": [-1, 3], "dtype": "float32"}},
    }
    assert record["signature"] == expected
    assert record["dynamic_batch"] is True
    runner = LiteRTClassifier(target)
    assert runner.signature() == expected
    with open(os.path.join(target, "classifier.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert (config["max_length"], config["pad_id"], config["bos_id"]) == (64, 0, 2)
    assert (config["signature"], config["input"], config["output"]) == (
        "classify",
        "token_ids",
        "probabilities",
    )
    with open(os.path.join(target, "labels.json"), encoding="utf-8") as f:
        assert json.load(f) == {"names": ["food", "music", "sport"]}
    assert runner.predict_proba([]).shape == (0, 3)
    assert record["latency_batch1"]["median_ms"] > 0
    assert record["class_names"] == ["food", "music", "sport"]


@pytest.mark.parametrize("quantize", ["dynamic", "float16", "int8"])
def test_quantized_modes_stay_within_tolerance(families, quantize, tmp_path):
    target = str(tmp_path / f"tflite_{quantize}")
    record = export_classifier_tflite(families["cnn_classifier"], target, quantize, 150)
    for field in (
        "examples",
        "max_abs_diff",
        "label_agreement",
        "accuracy",
        "keras_accuracy",
        "accuracy_drop",
        "tolerance",
        "latency_batch1",
        "size_bytes",
        "gzip_bytes",
        "ops",
        "versions",
        "signature",
    ):
        assert field in record, field
    assert record["quantize"] == quantize
    assert record["tolerance"]["max_accuracy_drop_points"] == ACCURACY_DROP_TOLERANCE[quantize]
    assert record["accuracy_drop"] * 100 <= ACCURACY_DROP_TOLERANCE[quantize]
    assert record["ops"] and not record["ops"][0].startswith("unavailable")
    assert 0 < record["gzip_bytes"] <= record["size_bytes"]
    if quantize == "int8":
        assert record["representative_rows"] == 128
        assert "QUANTIZE" in record["ops"] or record["int8_only"]
    assert os.path.isfile(os.path.join(target, "model.tflite"))


def test_int8_keeps_the_transformer_attention_in_float(families, tmp_path):
    from tfllm.export.classifier_tflite import INT8_FLOAT_OPS

    record = export_classifier_tflite(
        families["transformer_classifier"], str(tmp_path / "tflite_int8"), "int8", 150
    )
    assert record["int8_float_ops"] == list(INT8_FLOAT_OPS["transformer_classifier"])
    assert record["accuracy_drop"] * 100 <= ACCURACY_DROP_TOLERANCE["int8"]
    assert {"QUANTIZE", "DEQUANTIZE", "SOFTMAX"} <= set(record["ops"])


def test_a_forced_parity_break_writes_nothing(families, tmp_path, monkeypatch):
    import tfllm.export.classifier_tflite as module
    from tfllm.export.verified import VerificationError

    real = module.keras_probabilities
    monkeypatch.setattr(module, "keras_probabilities", lambda *a: np.roll(real(*a), 1, axis=-1))
    target = tmp_path / "tflite_none"
    with pytest.raises(VerificationError, match="nothing written to") as error:
        export_classifier_tflite(families["cnn_classifier"], str(target), "none", 30)
    message = str(error.value)
    assert "\n" not in message and message.endswith(f"nothing written to {target}")
    assert "label(s) differ" in message
    assert not target.exists()
    assert not os.listdir(tmp_path)  # no temp directory left behind


def test_a_tighter_tolerance_than_measured_fails(families, tmp_path):
    from tfllm.export.verified import VerificationError

    target = tmp_path / "tflite_dynamic"
    with pytest.raises(VerificationError, match=r"max \|Δp\| .* \(tolerance 1e-09\)"):
        export_classifier_tflite(
            families["cnn_classifier"], str(target), "dynamic", 30, max_abs_diff=1e-9
        )
    assert not target.exists()


def test_runner_ids_equal_training_encoding(families, tmp_path):
    """sentencepiece (the runner) and tensorflow_text (training) give the same ids."""
    from tfllm.inference.classifier_tflite_runner import LiteRTClassifier

    trained = families["cnn_classifier"]
    target = str(tmp_path / "tflite_none")
    export_classifier_tflite(trained, target, "none", 10)
    texts = TRICKY + [t for t, _ in synthetic_rows(50, seed=9)]
    ids = LiteRTClassifier(target).encode(texts)
    expected = encode_padded(trained.tokenizer, texts, 64)
    assert ids.dtype == np.int32 and ids.shape == (len(texts), 64)
    np.testing.assert_array_equal(ids, expected)
    # And encode_padded is encode_texts + padding.
    from tfllm.data.classification_data import encode_texts

    ragged = encode_texts(trained.tokenizer, tf.constant(texts), 64).to_list()
    for row, full in zip(ragged, expected, strict=True):
        assert full[: len(row)].tolist() == row and not full[len(row) :].any()


def test_runner_needs_no_tensorflow(families, tmp_path):
    target = str(tmp_path / "tflite_none")
    export_classifier_tflite(families["cnn_classifier"], target, "none", 10)
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"  # any TF import would fail
        "from tfllm.inference.classifier_tflite_runner import LiteRTClassifier\n"
        f"c = LiteRTClassifier({target!r})\n"
        "print(c.predict(['goal match team', 'bread soup oven']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['sport', 'food']"


def test_runner_on_a_missing_export(tmp_path):
    from tfllm.errors import TfllmError
    from tfllm.inference.classifier_tflite_runner import LiteRTClassifier

    with pytest.raises(TfllmError, match="missing model.tflite.*run tfllm-export --format=tflite"):
        LiteRTClassifier(str(tmp_path))


def test_evaluate_litert_backend_matches_keras(trained_classifier, tmp_path):
    from tfllm.data.classification_data import load_labelled_splits
    from tfllm.evaluation.classifier_eval import evaluate_corpus

    workdir = str(tmp_path / "w")
    shutil.copytree(trained_classifier, workdir, ignore=shutil.ignore_patterns("export"))
    trained = _load(workdir)
    export_classifier_tflite(trained, os.path.join(workdir, "export", "tflite_none"), "none", 150)
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        before = json.load(f)
    proc = run_cli("evaluate", f"--workdir={workdir}", "--backend=litert", "--split=test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "litert (none)" in proc.stdout
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        saved = json.load(f)
    litert = saved["litert_none_test"]
    assert (litert["backend"], litert["quantize"], litert["source"]) == ("litert", "none", "test")
    keras_metrics, _ = evaluate_corpus(
        trained, load_labelled_splits(trained.config.data).test, "test", batch_size=16
    )
    assert litert["accuracy"] == keras_metrics["accuracy"]
    assert litert["macro_f1"] == keras_metrics["macro_f1"]
    assert litert["confusion_matrix"] == keras_metrics["confusion_matrix"]
    assert litert["log_loss"] == pytest.approx(keras_metrics["log_loss"], abs=1e-5)
    assert os.path.isfile(os.path.join(workdir, "confusion_matrix_litert_none_test.png"))
    assert {k: v for k, v in saved.items() if k != "litert_none_test"} == before  # Keras kept

    # An export that does not exist: one line naming the command that makes it.
    proc = run_cli("evaluate", f"--workdir={workdir}", "--backend=litert", "--quantize=int8")
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "no TFLite export" in line
    assert "tfllm-export" in line and "--format=tflite --quantize=int8" in line
    assert "Traceback" not in proc.stderr
