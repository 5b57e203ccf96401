"""A text classifier on an imported BERT (`bert_classifier`, `train.init_from=W_BERT`).

On the tiny fixture (tests/fixtures/pretrained/bert_tiny, imported once per
module): rows are `[CLS] pieces [SEP]`, logits do not depend on right padding,
`init_from` restores every encoder weight (the classifier's encoder gives the
imported encoder's hidden states exactly), the commands train → evaluate →
export (SavedModel and TFLite, both verified against Keras) → distill into a
CNN student, and a wrong `init_from` is one line.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_overrides, config_from_flags, last_stderr_line, run_cli

from tfllm.config import base_config, config_to_json
from tfllm.data.classification_data import encode_split, encode_texts, load_labelled_splits
from tfllm.data.corpus import Corpus
from tfllm.data.labels import LabelVocab
from tfllm.data.tokenizer_kinds import load_tokenizer
from tfllm.distribute.strategy import create_strategy
from tfllm.errors import ConfigError
from tfllm.export.verified import load_serving
from tfllm.inference.loading import load_trained
from tfllm.models import BertClassifier, build_model
from tfllm.pretrained.importer import import_checkpoint
from tfllm.training.checkpoints import initialize_weights
from tfllm.training.run import adopt_backbone_architecture, train
from tfllm.training.tasks import ClassificationTask

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained", "bert_tiny")
TEXTS = ["the goal of the match", "a song", "bread and soup with spice " * 6, "x"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("imported") / "bert")
    import_checkpoint(FIXTURE, workdir)
    return workdir


def overrides(files: dict[str, str], bert: str, steps: int = 100) -> list[str]:
    return [
        *classifier_overrides(files, "bert_classifier", steps),
        f"--config.train.init_from={bert}",
        "--config.model.max_length=48",
        "--config.train.learning_rate=0.003",
        "--config.train.eval_every=50",
        "--config.train.checkpoint_every=50",
    ]


def config_for(files: dict[str, str], bert: str):
    return config_from_flags(overrides(files, bert))


def initialised(files: dict[str, str], bert: str) -> tuple[BertClassifier, object]:
    """A bert_classifier after `train.init_from`, as a fresh training run starts it."""
    config = config_for(files, bert)
    adopt_backbone_architecture(config)
    tokenizer = load_tokenizer(os.path.join(bert, "tokenizer"))
    splits = load_labelled_splits(config.data)
    vocab = LabelVocab.learn(splits.train.labels)
    split = encode_split(tokenizer, splits.train, vocab, 48, "train")
    model = build_model(config.model, tokenizer.vocab_size, vocab.num_classes)
    task = ClassificationTask(split, None, vocab.num_classes, 48)
    initialize_weights(config, create_strategy(config.runtime), model, task)
    return model, tokenizer


def test_rows_are_cls_pieces_sep_and_truncation_keeps_sep(bert):
    tokenizer = load_tokenizer(os.path.join(bert, "tokenizer"))
    rows = encode_texts(tokenizer, tf.constant(TEXTS), 12).to_list()
    pieces = tokenizer.tokenize(tf.constant(TEXTS)).to_list()
    for row, text_pieces in zip(rows, pieces, strict=True):
        assert row[0] == tokenizer.cls_id and row[-1] == tokenizer.sep_id
        assert row[1:-1] == text_pieces[:10] and len(row) <= 12
    assert tokenizer.pad_id == 0
    # Training's encoding is the same, and counts the rows whose pieces were cut.
    corpus = Corpus(texts=TEXTS, labels=["a", "b"] * 2, sources=[f"t:{i}" for i in range(4)])
    split = encode_split(tokenizer, corpus, LabelVocab(["a", "b"]), 12, "t")
    assert split.ids.to_list() == rows
    assert split.truncated == sum(len(p) + 2 > 12 for p in pieces) > 0


def test_logits_equal_for_every_right_padding(labelled_files, bert):
    model, tokenizer = initialised(labelled_files, bert)
    ragged = encode_texts(tokenizer, tf.constant(TEXTS), 40)  # room for more padding
    longest = ragged.to_tensor(0)
    base = model(longest).numpy()
    for width in (int(longest.shape[1]) + 1, 48):
        padded = ragged.to_tensor(0, shape=[None, width])
        np.testing.assert_allclose(model(padded).numpy(), base, rtol=0, atol=1e-6)
    # One row alone equals the same row in a padded batch.
    for i in range(len(TEXTS)):
        alone = model(tf.constant([ragged[i].numpy()])).numpy()
        np.testing.assert_allclose(alone[0], base[i], rtol=0, atol=1e-6)


def test_init_from_restores_the_imported_encoder_exactly(labelled_files, bert):
    model, tokenizer = initialised(labelled_files, bert)
    imported = load_trained(bert).model
    ids = encode_texts(tokenizer, tf.constant(TEXTS), 48).to_tensor(0)
    np.testing.assert_array_equal(model.encoder(ids).numpy(), imported(ids).numpy())
    restored = {w.path.split("encoder/", 1)[1]: w.numpy() for w in model.encoder.weights}
    for weight in imported.weights:
        name = weight.path.split("/", 1)[1]
        expected = weight.numpy()[:48] if "position_embedding" in name else weight.numpy()
        np.testing.assert_array_equal(restored[name], expected, err_msg=name)
    assert len(restored) == len(imported.weights)


def test_train_evaluate_export_and_distill_commands(labelled_files, bert, tmp_path):
    workdir = str(tmp_path / "clf")
    proc = run_cli(
        "train", "--config=configs/cnn_sst2.py", f"--workdir={workdir}",
        *overrides(labelled_files, bert),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initialised the backbone from the bert encoder" in proc.stdout
    config = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert config["model"]["name"] == "bert_classifier" and config["model"]["hidden_dim"] == 32
    assert sorted(os.listdir(os.path.join(workdir, "tokenizer"))) == sorted(
        os.listdir(os.path.join(bert, "tokenizer"))
    )
    metrics = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert metrics["accuracy"] > 0.4, metrics  # learns something: 3 classes, chance 1/3

    proc = run_cli("evaluate", f"--workdir={workdir}", "--split=test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "macro" in proc.stdout and "roc-auc" in proc.stdout
    test = json.loads(open(os.path.join(workdir, "metrics.json")).read())["test_split"]
    assert test["num_examples"] == 150 and "confusion_matrix" in test

    for fmt in ("saved_model", "tflite"):
        proc = run_cli("export", f"--workdir={workdir}", f"--format={fmt}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    saved = os.path.join(workdir, "export", "saved_model")
    record = json.loads(open(os.path.join(saved, "verification.json")).read())
    assert record["match"] and record["label_mismatches"] == 0
    lite = json.loads(
        open(os.path.join(workdir, "export", "tflite_none", "verification.json")).read()
    )
    assert lite["match"] and lite["tokenizer_mismatches"] == 0
    assert lite["padding_max_abs_diff"] <= 1e-6
    # Strings in, labels out: the SavedModel's labels are the Keras model's.
    trained = load_trained(workdir)
    out = load_serving(saved).signatures["serving_default"](texts=tf.constant(TEXTS))
    ids = encode_texts(trained.tokenizer, tf.constant(TEXTS), 48).to_tensor(0)
    expected = [trained.labels.names[i] for i in trained.model(ids).numpy().argmax(-1)]
    assert [s.decode() for s in out["label"].numpy()] == expected

    student = tmp_path / "student.py"
    student.write_text(
        "from configs.cnn_sst2 import get_config as base\n\n\n"
        "def get_config():\n    config = base()\n    config.model.max_length = 48\n"
        "    return config\n"
    )
    proc = run_cli(
        "compress", f"--workdir={workdir}", "--method=distill", f"--student_config={student}",
        "--steps=10", f"--output={tmp_path / 'cnn'}", "--augment=0.5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "50% of each batch augmented" in proc.stdout  # [MASK]/[CLS]/[SEP] rows
    record = json.loads(open(tmp_path / "cnn" / "compression.json").read())
    assert record["method"] == "distill" and "accuracy" in record["metrics"]


def test_wrong_init_from_is_one_line(labelled_files, bert, tmp_path):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(config_to_json(base_config()))
    cases = {
        str(gpt): "holds a 'gpt' model; bert_classifier starts from an imported 'bert' workdir",
        str(tmp_path / "none"): "has no config.json",
        "": "config.train.init_from: empty, but bert_classifier needs a wordpiece tokenizer",
    }
    for init_from, message in cases.items():
        config = config_for(labelled_files, bert)
        config.train.init_from = init_from
        with pytest.raises(ConfigError) as info:
            train(config, str(tmp_path / "out"))
        assert message in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(tmp_path / "out")
    proc = run_cli(
        "train", "--config=configs/cnn_sst2.py", f"--workdir={tmp_path / 'cli'}",
        *overrides(labelled_files, str(gpt)),
    )  # fmt: skip
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "config.train.init_from" in line and "'gpt'" in line, proc.stderr[-2000:]
