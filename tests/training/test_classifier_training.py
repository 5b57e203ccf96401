"""Classifier training through the shared loop: learning, transfer, freezing, resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import classifier_config, classifier_overrides, run_cli


@pytest.mark.parametrize("name", ["mlp_classifier", "cnn_classifier", "transformer_classifier"])
def test_each_family_learns_the_separable_task(name, labelled_files, tmp_path):
    from tfllm.training.run import train

    metrics = train(classifier_config(labelled_files, name, steps=300), str(tmp_path))
    assert metrics["accuracy"] > 0.95, metrics
    assert metrics["macro_f1"] > 0.95
    for key in ("per_class", "confusion_matrix", "roc_auc", "eval_loss", "examples_per_second"):
        assert key in metrics
    assert sorted(metrics["per_class"]) == ["food", "music", "sport"]  # string labels kept
    assert np.sum(metrics["confusion_matrix"]) == 150
    assert os.path.isfile(tmp_path / "confusion_matrix.png")
    saved = json.loads((tmp_path / "labels.json").read_text())
    assert saved == {"names": ["food", "music", "sport"]}


def _lm_backbone_weights(lm_model, classifier):
    pairs = [(lm_model.token_embedding, classifier.token_embedding)]
    pairs += list(zip(lm_model.blocks, classifier.blocks, strict=True))
    pairs.append((lm_model.final_norm, classifier.final_norm))
    return pairs


def test_init_from_lm_copies_the_backbone_and_reuses_its_tokenizer(
    trained_workdir, labelled_files, tmp_path
):
    from tfllm.data.tokenizer import Tokenizer
    from tfllm.distribute.strategy import create_strategy
    from tfllm.inference.loading import load_trained
    from tfllm.training.run import adopt_backbone_architecture
    from tfllm.training.tasks import ClassificationTask
    from tfllm.training.trainer import Trainer

    lm = load_trained(trained_workdir)
    config = classifier_config(labelled_files, "transformer_classifier")
    config.train.init_from = trained_workdir
    config.model.hidden_dim = 64  # differs from the LM: the LM's architecture wins
    config.model.max_length = 16  # shorter than the LM's 32 positions: allowed
    adopt_backbone_architecture(config)
    assert config.model.hidden_dim == lm.config.model.hidden_dim

    # Build the classifier the way train_classifier does, then initialise.
    from tfllm.data.classification_data import encode_split, load_labelled_splits
    from tfllm.data.labels import LabelVocab
    from tfllm.data.sources import ensure_tokenizer
    from tfllm.models import build_model

    splits = load_labelled_splits(config.data)
    tokenizer = ensure_tokenizer(config, str(tmp_path), splits.train.texts)
    assert (
        tokenizer.model_proto
        == Tokenizer.load(os.path.join(trained_workdir, "tokenizer")).model_proto
    )
    vocab = LabelVocab.learn(splits.train.labels)
    task = ClassificationTask(
        encode_split(tokenizer, splits.train, vocab, 16, "train"), None, 3, 16
    )
    trainer = Trainer(
        config,
        str(tmp_path),
        create_strategy(config.runtime),
        build_model=lambda: build_model(config.model, tokenizer.vocab_size, 3),
        task=task,
    )
    head_before = [w.copy() for w in trainer.model.head.get_weights()]
    trainer.restore_or_initialize()
    for source, target in _lm_backbone_weights(lm.model, trainer.model):
        for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        lm.model.position_embedding.get_weights()[0][:16],
        trainer.model.position_embedding.get_weights()[0],
    )
    for a, b in zip(head_before, trainer.model.head.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the new head keeps its own init


def test_finetune_with_frozen_blocks_and_slower_backbone(trained_workdir, labelled_files, tmp_path):
    from tfllm.inference.loading import load_trained
    from tfllm.training.run import train

    lm = load_trained(trained_workdir)
    config = classifier_config(labelled_files, "transformer_classifier", steps=50)
    config.train.init_from = trained_workdir
    config.model.max_length = 32  # the LM's context
    config.train.freeze_blocks = 1
    config.train.freeze_embeddings = True
    config.train.backbone_lr_scale = 0.1
    metrics = train(config, str(tmp_path / "ft"))
    assert metrics["step"] == 50
    tuned = load_trained(str(tmp_path / "ft")).model
    # Frozen: embeddings and block 0 still equal the LM's; block 1 has moved.
    np.testing.assert_array_equal(
        lm.model.token_embedding.get_weights()[0], tuned.token_embedding.get_weights()[0]
    )
    for a, b in zip(lm.model.blocks[0].get_weights(), tuned.blocks[0].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(
            lm.model.blocks[1].get_weights(), tuned.blocks[1].get_weights(), strict=True
        )
    ]
    assert any(moved)


def test_resume_keeps_label_ids_and_continues(labelled_files, tmp_path):
    from tfllm.training.run import train

    config = classifier_config(labelled_files, "mlp_classifier", steps=50)
    train(config, str(tmp_path))
    config = classifier_config(labelled_files, "mlp_classifier", steps=100)
    metrics = train(config, str(tmp_path))
    assert metrics["step"] == 100
    history = json.loads((tmp_path / "history.json").read_text())["history"]
    assert [r["step"] for r in history] == [25, 50, 75, 100]


def test_class_weights_balanced_trains(labelled_files, tmp_path):
    from tfllm.training.run import train

    config = classifier_config(labelled_files, "mlp_classifier", steps=50)
    config.train.class_weights = "balanced"
    assert train(config, str(tmp_path))["accuracy"] > 0.8


def test_mirrored_two_replicas_trains_a_classifier(labelled_files, tmp_path):
    """Two logical-CPU replicas through the real command (devices are set up before TF starts)."""
    workdir = tmp_path / "w"
    proc = run_cli(
        "train",
        "--config=configs/mlp_sst2.py",
        f"--workdir={workdir}",
        *classifier_overrides(labelled_files, "mlp_classifier", steps=50),
        "--config.runtime.strategy=mirrored",
        "--config.runtime.logical_cpus=2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["accuracy"] > 0.8


def test_resume_with_a_different_optimizer_layout_is_refused(labelled_files, tmp_path):
    from tfllm.errors import ConfigError
    from tfllm.training.run import train

    config = classifier_config(labelled_files, "transformer_classifier", steps=25)
    train(config, str(tmp_path))
    config = classifier_config(labelled_files, "transformer_classifier", steps=50)
    config.train.freeze_blocks = 1
    with pytest.raises(ConfigError, match="config.train.freeze_blocks: 1 differs from 0"):
        train(config, str(tmp_path))


def test_init_from_checks_context_and_model_family(trained_workdir, trained_classifier, tmp_path):
    from tfllm.errors import ConfigError
    from tfllm.training.run import adopt_backbone_architecture

    config = classifier_config({"train": "x", "eval": "x", "test": "x"}, "transformer_classifier")
    config.train.init_from = trained_workdir
    config.model.max_length = 64  # the LM has 32 positions
    with pytest.raises(ConfigError, match="max_length: 64 exceeds the 32 positions"):
        adopt_backbone_architecture(config)
    config.train.init_from = trained_classifier  # a classifier, not a GPT
    config.model.max_length = 32
    with pytest.raises(ConfigError, match="not a 'gpt' LM"):
        adopt_backbone_architecture(config)
    cnn = classifier_config({"train": "x", "eval": "x", "test": "x"}, "cnn_classifier")
    cnn.train.init_from = trained_workdir
    with pytest.raises(ConfigError, match="only transformer_classifier"):
        adopt_backbone_architecture(cnn)
