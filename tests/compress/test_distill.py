"""Distillation: the loss against a numpy hand computation, and a student trained by the CLI."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfllm.compress.distill import DistillationPlugin, distillation_loss


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _reference(targets, student, teacher, temperature, alpha):
    """α · CE(labels, student) + (1 − α) · T² · KL(p_t ‖ p_s), softmaxes at temperature T."""
    student = student.astype(np.float64)
    teacher = teacher.astype(np.float64)
    log_ps = _log_softmax(student / temperature)
    log_pt = _log_softmax(teacher / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
    ce = -np.take_along_axis(_log_softmax(student), targets[..., None], axis=-1)[..., 0]
    return alpha * ce + (1 - alpha) * temperature**2 * kl, ce, kl


SHAPES = {"classifier": (3, 4), "lm": (2, 5, 7)}


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize(("temperature", "alpha"), [(2.0, 0.5), (1.0, 0.3), (4.0, 0.9)])
def test_distillation_loss_matches_numpy(kind, temperature, alpha):
    rng = np.random.default_rng(0)
    shape = SHAPES[kind]
    student = (2 * rng.normal(size=shape)).astype(np.float32)
    teacher = (2 * rng.normal(size=shape)).astype(np.float32)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    got = distillation_loss(
        tf.constant(targets), tf.constant(student), tf.constant(teacher), temperature, alpha
    ).numpy()
    want, ce, kl = _reference(targets, student, teacher, temperature, alpha)
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # The ends of α: the hard loss alone, and T² · KL alone.
    only_hard = distillation_loss(targets, student, teacher, temperature, 1.0).numpy()
    np.testing.assert_allclose(only_hard, ce, atol=1e-5, rtol=1e-5)
    only_soft = distillation_loss(targets, student, teacher, temperature, 0.0).numpy()
    np.testing.assert_allclose(only_soft, temperature**2 * kl, atol=1e-5, rtol=1e-5)
    assert (kl > 0).all()  # different logits: the soft term is not vacuous
    # A student equal to its teacher has no soft loss.
    same = distillation_loss(targets, teacher, teacher, temperature, 0.0).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-5)


def test_plugin_loss_is_the_mean_over_positions_for_a_language_model():
    rng = np.random.default_rng(1)
    inputs = keras.Input((5,), dtype="int32")
    embed = keras.layers.Embedding(7, 4)

    def lm(seed):
        model = keras.Model(inputs, keras.layers.Dense(7)(embed(inputs)))
        for v in model.weights:
            v.assign(np.random.default_rng(seed).normal(size=v.shape).astype(np.float32))
        return model

    student, teacher = lm(2), lm(3)
    plugin = DistillationPlugin("unused", temperature=2.0, alpha=0.25)
    plugin.teacher = teacher  # what `setup` loads from the teacher's workdir
    ids = tf.constant(rng.integers(0, 7, size=(2, 5)), tf.int32)
    targets = rng.integers(0, 7, size=(2, 5))
    got = plugin.per_example_loss(None, student, ids, tf.constant(targets), training=True)
    want, _, _ = _reference(targets, student(ids).numpy(), teacher(ids).numpy(), 2.0, 0.25)
    assert tuple(got.shape) == (2,)
    np.testing.assert_allclose(got.numpy(), want.mean(-1), atol=1e-5, rtol=1e-5)

    # Instruction data (targets, response mask): each row's mean over its response
    # tokens only, as InstructionTask's own loss; a row with no response token is 0.
    mask = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], np.float32)
    got = plugin.per_example_loss(
        None, student, ids, (tf.constant(targets), tf.constant(mask)), training=True
    )
    np.testing.assert_allclose(got.numpy(), [want[0, 2:].mean(), 0.0], atol=1e-5, rtol=1e-5)


STUDENT = """
from tfllm.config import base_config


def get_config():
    config = base_config()
    config.model.name = "mlp_classifier"
    config.model.embedding_dim = 8
    config.model.mlp_hidden_dims = (8,)
    config.model.max_length = 64
    config.train.num_steps = 20
    config.train.steps_per_loop = 10
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.train.batch_size = 32
    return config
"""


def test_distill_a_small_student_with_the_cli(trained_classifier, tmp_path):
    from tfllm.config import load_workdir_config
    from tfllm.data.tokenizer import Tokenizer

    student = tmp_path / "student.py"
    student.write_text(STUDENT, encoding="utf-8")
    output = str(tmp_path / "student")
    proc = run_cli(
        "compress",
        f"--workdir={trained_classifier}",
        f"--output={output}",
        "--method=distill",
        f"--student_config={student}",
        "--temperature=3",
        "--alpha=0.2",
        "--augment=0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Distilling from" in proc.stdout and "T=3, α=0.2" in proc.stdout
    assert "50% of each batch augmented" in proc.stdout
    with open(os.path.join(output, "compression.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["method"] == "distill" and record["steps"] == 20
    assert record["teacher_params"] > record["num_params"] > 0
    assert (record["settings"]["temperature"], record["settings"]["alpha"]) == (3.0, 0.2)
    assert record["settings"]["augment"] == 0.5
    with open(os.path.join(trained_classifier, "metrics.json"), encoding="utf-8") as f:
        assert record["teacher_params"] == json.load(f)["num_params"]
    # The student is an mlp on the teacher's data, tokenizer and class ids.
    config = load_workdir_config(output)
    teacher = load_workdir_config(trained_classifier)
    assert config.model.name == "mlp_classifier" and list(config.model.mlp_hidden_dims) == [8]
    assert config.data.to_dict() == teacher.data.to_dict()
    assert config.compress.source == os.path.abspath(trained_classifier)
    vocab = Tokenizer.load(os.path.join(output, "tokenizer")).vocab_size
    assert vocab == Tokenizer.load(os.path.join(trained_classifier, "tokenizer")).vocab_size
    with (
        open(os.path.join(output, "labels.json"), encoding="utf-8") as f,
        open(os.path.join(trained_classifier, "labels.json"), encoding="utf-8") as g,
    ):
        assert json.load(f) == json.load(g)
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["student_params"] == record["num_params"]
    assert metrics["teacher_params"] == record["teacher_params"]


def test_student_token_table_starts_as_the_teachers():
    """`student_embeddings="teacher"`: the student's table is the teacher's (BERT-style
    teachers hold it in their encoder), and a width that differs is one line."""
    from tfllm.errors import ConfigError
    from tfllm.models import BertClassifier, CNNClassifier

    keras.utils.set_random_seed(0)
    teacher = BertClassifier(50, 2, 16, num_layers=1, num_heads=2, hidden_dim=8,
                             intermediate_dim=16)  # fmt: skip
    teacher(tf.zeros([1, 16], tf.int32))
    student = CNNClassifier(50, 2, 16, embedding_dim=8, conv_filters=4)
    student(tf.zeros([1, 16], tf.int32))
    plugin = DistillationPlugin("teacher_dir", 2.0, 0.5, student_embeddings="teacher")
    plugin.teacher = teacher
    line = plugin.initialize(student)
    assert "token table copied from the teacher" in line
    np.testing.assert_array_equal(
        student.token_embedding.embeddings.numpy(),
        teacher.encoder.token_embedding.embeddings.numpy(),
    )
    narrow = CNNClassifier(50, 2, 16, embedding_dim=4, conv_filters=4)
    narrow(tf.zeros([1, 16], tf.int32))
    with pytest.raises(ConfigError, match=r"\(50, 4\) must have the teacher's shape \(50, 8\)"):
        plugin.initialize(narrow)
    plain = DistillationPlugin("teacher_dir", 2.0, 0.5)
    plain.teacher = teacher
    before = narrow.token_embedding.embeddings.numpy()
    assert "copied" not in plain.initialize(narrow)
    np.testing.assert_array_equal(narrow.token_embedding.embeddings.numpy(), before)
