"""Classifier SavedModel: raw strings in, label + probabilities out, equal to Keras."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, synthetic_rows


@pytest.fixture(scope="module")
def exported(trained_classifier) -> str:
    proc = run_cli("export", f"--workdir={trained_classifier}", "--format=saved_model")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labels identical" in proc.stdout
    return os.path.join(trained_classifier, "export", "saved_model")


def test_string_round_trip_matches_keras(exported, trained_classifier):
    from tfllm.export.classifier_saved_model import keras_probabilities
    from tfllm.export.verified import load_serving
    from tfllm.inference.loading import load_trained

    trained = load_trained(trained_classifier)
    # Texts of very different lengths in one request (they share one padded batch),
    # an empty string, non-ASCII text and a row longer than max_length.
    texts = [t for t, _ in synthetic_rows(20, seed=7)] + ["", "naïve café ☕", "goal " * 200]
    out = load_serving(exported).signatures["serving_default"](texts=tf.constant(texts))
    reference = keras_probabilities(
        trained.model, trained.tokenizer, texts, int(trained.config.model.max_length)
    )
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (len(texts), 3)
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)
    labels = [s.decode() for s in out["label"].numpy()]
    assert labels == [trained.labels.names[i] for i in reference.argmax(-1)]
    assert out["class_id"].numpy().tolist() == reference.argmax(-1).tolist()
    # Each row alone gives the same answer as inside the batch (padding invariance).
    single = load_serving(exported).signatures["serving_default"](texts=tf.constant(texts[:1]))
    np.testing.assert_allclose(single["probabilities"].numpy()[0], probabilities[0], atol=1e-5)


def test_class_names_ship_as_an_asset(exported):
    with open(os.path.join(exported, "assets", "labels.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == ["food", "music", "sport"]


def test_verification_record(exported):
    with open(os.path.join(exported, "verification.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["match"] is True
    assert record["label_mismatches"] == 0
    assert record["max_abs_diff"] <= record["tolerance"]
    assert record["examples"] == 150  # the whole (synthetic) eval split
    assert record["accuracy"] > 0.9
    assert record["class_names"] == ["food", "music", "sport"]


def test_a_forced_parity_break_writes_nothing(trained_classifier, tmp_path, monkeypatch):
    import tfllm.export.classifier_saved_model as module
    from tfllm.export.verified import VerificationError
    from tfllm.inference.loading import load_trained

    trained = load_trained(trained_classifier)
    real = module.keras_probabilities
    monkeypatch.setattr(module, "keras_probabilities", lambda *a: np.roll(real(*a), 1, axis=-1))
    target = tmp_path / "saved_model"
    with pytest.raises(VerificationError, match="nothing written"):
        module.export_classifier_saved_model(
            trained.model,
            trained.tokenizer,
            trained.labels,
            str(target),
            verify_texts=["goal match", "bread soup"],
        )
    assert not target.exists()
    assert not [p for p in os.listdir(tmp_path)]  # no temp directory left behind
