"""A text classifier on an imported Llama (`llama_classifier`, `train.init_from=W_LLAMA`).

On the tiny fixture (tests/fixtures/pretrained/llama_tiny, byte-level BPE,
imported once per module): rows are `[bos] + pieces` in the LM's own ids,
`init_from` restores every decoder weight (the classifier's decoder gives the
imported LM's logits exactly), and the commands train with LoRA → evaluate →
export (SavedModel and TFLite, both verified against Keras: the adapters are
merged, and id 0 pads though the tokenizer's own pad token is another id).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_overrides, config_from_flags, run_cli

from tfllm.data.classification_data import encode_split, encode_texts, load_labelled_splits
from tfllm.data.labels import LabelVocab
from tfllm.data.tokenizer_kinds import load_tokenizer
from tfllm.distribute.strategy import create_strategy
from tfllm.errors import ConfigError
from tfllm.export.verified import load_serving
from tfllm.inference.loading import load_trained
from tfllm.models import build_model
from tfllm.pretrained.importer import import_checkpoint
from tfllm.training.checkpoints import initialize_weights
from tfllm.training.pretrained_classifier import check_tokenizer_ids
from tfllm.training.run import adopt_backbone_architecture
from tfllm.training.tasks import ClassificationTask

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained", "llama_tiny")
TEXTS = ["the goal of the match", "a song", "bread and soup with spice " * 6, "x"]
LENGTH = 48


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("imported") / "llama")
    import_checkpoint(FIXTURE, workdir)
    return workdir


def overrides(files: dict[str, str], llama: str, steps: int = 100) -> list[str]:
    return [
        *classifier_overrides(files, "llama_classifier", steps),
        f"--config.train.init_from={llama}",
        f"--config.model.max_length={LENGTH}",
        "--config.model.pooling=last",
        "--config.train.learning_rate=0.01",
        "--config.train.eval_every=50",
        "--config.train.checkpoint_every=50",
    ]


def config_for(files: dict[str, str], llama: str):
    return config_from_flags(overrides(files, llama))


def test_init_from_restores_the_imported_decoder_and_pools_its_last_token(labelled_files, llama):
    config = config_for(labelled_files, llama)
    adopt_backbone_architecture(config)
    assert config.model.num_kv_heads == 2 and config.model.hidden_dim == 32  # the fixture's
    tokenizer = load_tokenizer(os.path.join(llama, "tokenizer"))
    check_tokenizer_ids(config, tokenizer)  # id 0 is a special token of this vocabulary
    splits = load_labelled_splits(config.data)
    vocab = LabelVocab.learn(splits.train.labels)
    split = encode_split(tokenizer, splits.train, vocab, LENGTH, "train")
    model = build_model(config.model, tokenizer.vocab_size, vocab.num_classes)
    task = ClassificationTask(split, None, vocab.num_classes, LENGTH)
    initialize_weights(config, create_strategy(config.runtime), model, task)

    imported = load_trained(llama).model
    ragged = encode_texts(tokenizer, tf.constant(TEXTS), LENGTH)
    rows = ragged.to_list()
    pieces = tokenizer.tokenize(tf.constant(TEXTS)).to_list()
    assert all(r == [tokenizer.bos_id, *p][:LENGTH] for r, p in zip(rows, pieces, strict=True))
    ids = ragged.to_tensor(0)
    np.testing.assert_array_equal(model.decoder(ids).numpy(), imported(ids).numpy())
    # Each row's logits are the head on the imported LM's last real state, row alone.
    logits = model(ids).numpy()
    for i, row in enumerate(rows):
        alone = tf.constant([row])
        state = imported.final_norm(imported.residual_stream(alone))[0, -1]
        np.testing.assert_allclose(
            logits[i], model.head(state[None]).numpy()[0], rtol=1e-5, atol=1e-6
        )
    wide = ragged.to_tensor(0, shape=[None, LENGTH])
    np.testing.assert_allclose(model(wide).numpy(), logits, rtol=0, atol=1e-5)


def test_lora_train_evaluate_and_verified_exports(labelled_files, llama, tmp_path):
    workdir = str(tmp_path / "clf")
    proc = run_cli(
        "train", "--config=configs/cnn_sst2.py", f"--workdir={workdir}",
        *overrides(labelled_files, llama), "--config.train.lora_rank=4",
        "--config.train.lora_targets=all",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initialised the backbone from the llama decoder" in proc.stdout
    metrics = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert metrics["accuracy"] > 0.5, metrics  # 3 classes, chance 1/3
    assert metrics["lora_params"] > 0 and metrics["trainable_params"] < metrics["total_params"]

    proc = run_cli("evaluate", f"--workdir={workdir}", "--split=test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "macro" in proc.stdout and "roc-auc" in proc.stdout

    for fmt in ("saved_model", "tflite"):
        proc = run_cli("export", f"--workdir={workdir}", f"--format={fmt}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    saved = os.path.join(workdir, "export", "saved_model")
    record = json.loads(open(os.path.join(saved, "verification.json")).read())
    assert record["match"] and record["label_mismatches"] == 0
    lite_dir = os.path.join(workdir, "export", "tflite_none")
    lite = json.loads(open(os.path.join(lite_dir, "verification.json")).read())
    assert lite["match"] and lite["tokenizer_mismatches"] == 0
    assert lite["padding_max_abs_diff"] <= 1e-5
    # Strings in, labels out: the SavedModel's labels are the (merged) Keras model's.
    trained = load_trained(workdir)
    out = load_serving(saved).signatures["serving_default"](texts=tf.constant(TEXTS))
    ids = encode_texts(trained.tokenizer, tf.constant(TEXTS), LENGTH).to_tensor(0)
    expected = [trained.labels.names[i] for i in trained.model(ids).numpy().argmax(-1)]
    assert [s.decode() for s in out["label"].numpy()] == expected


def test_wrong_source_and_tokenizer_are_one_line(labelled_files, llama, tmp_path):
    config = config_for(labelled_files, llama)
    config.train.init_from = os.path.join(os.path.dirname(llama), "missing")  # no config.json there
    with pytest.raises(ConfigError, match="has no config.json") as info:
        adopt_backbone_architecture(config)
    assert "\n" not in str(info.value)
    config = config_for(labelled_files, llama)
    config.model.max_length = 100  # the fixture's context is 64
    with pytest.raises(ConfigError, match="exceeds the 64 positions of the llama model"):
        adopt_backbone_architecture(config)

    class PlainTextZero:  # Llama 3's vocabulary: id 0 is "!"
        pad_id, unk_id, bos_id, eos_id = -1, -1, 128000, 128009

    config = config_for(labelled_files, llama)
    with pytest.raises(ConfigError, match="id 0 of this tokenizer is ordinary text"):
        check_tokenizer_ids(config, PlainTextZero())
