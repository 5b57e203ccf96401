"""Optimization features: schedules, weight-decay exclusions, clipping,
gradient accumulation, precisions, early stopping."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import build_trainer, tiny_config

from tfllm.cli.common import setup_runtime
from tfllm.config import base_config
from tfllm.models import build_model
from tfllm.training.optim import create_optimizer, learning_rate_schedule
from tfllm.training.run import train_lm


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [  # peak 1e-3, warmup 100, 1000 steps, min ratio 0.1; step: ×0.5 every 300 after warmup
        ("cosine", {0: 0.0, 50: 5e-4, 100: 1e-3, 550: 5.5e-4, 1000: 1e-4}),
        ("linear", {0: 1e-5, 99: 1e-3, 100: 1e-3, 550: 5.5e-4, 1000: 1e-4}),
        ("constant", {0: 1e-5, 99: 1e-3, 500: 1e-3, 1000: 1e-3}),
        ("inverse_sqrt", {0: 1e-5, 99: 1e-3, 399: 5e-4, 9999: 1e-4}),
        ("step", {99: 1e-3, 399: 1e-3, 400: 5e-4, 700: 2.5e-4}),
    ],
)
def test_learning_rate_at_key_steps(schedule, expected):
    train = base_config().train
    train.lr_schedule, train.lr_step_every = schedule, 300
    lr = learning_rate_schedule(train)
    for step, value in expected.items():
        got = float(lr(step)) if callable(lr) else lr
        assert math.isclose(got, value, rel_tol=1e-3, abs_tol=1e-9), (schedule, step, got)


def test_weight_decay_skips_norms_biases_and_positions():
    train = base_config().train
    train.learning_rate, train.warmup_steps, train.lr_schedule = 0.1, 0, "constant"
    train.weight_decay = 0.5
    model = build_model(base_config().model, vocab_size=300)
    optimizer = create_optimizer(train, model)
    before = [v.numpy().copy() for v in model.trainable_variables]
    zeros = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)  # only the decay moves weights
    decayed, kept = set(), set()
    for v, old in zip(model.trainable_variables, before, strict=True):
        if not np.any(old):
            continue  # zero-initialised: decay cannot show
        (decayed if not np.allclose(v.numpy(), old) else kept).add(v.path)
        if v.path in decayed:
            np.testing.assert_allclose(v.numpy(), old * (1 - 0.1 * 0.5), rtol=1e-5)
    assert all("kernel" in p or "token_embedding" in p for p in decayed), [
        p for p in decayed if "kernel" not in p and "token_embedding" not in p]
    assert any("token_embedding" in p for p in decayed)
    assert all(("gamma" in p or "beta" in p or "bias" in p or "position" in p) for p in kept), kept
    assert any("position_embedding" in p for p in kept) and any("gamma" in p for p in kept)


def _one_loop(config, workdir, steps=3):
    setup_runtime(config)
    trainer = build_trainer(config, workdir)
    iterator = trainer.train_iterator(0)
    loss, norm = trainer._train_loop(iterator, tf.constant(steps, tf.int32))
    return float(loss), float(norm), [v.numpy() for v in trainer.model.trainable_variables]


def test_gradient_accumulation_equals_the_big_batch(corpus_file, tmp_path):
    config = tiny_config(corpus_file)
    big = _one_loop(config, tmp_path / "a")
    config.train.grad_accum_steps = 4  # 4 micro-batches of 2
    accumulated = _one_loop(config, tmp_path / "b")
    assert math.isclose(big[0], accumulated[0], rel_tol=1e-5)
    assert math.isclose(big[1], accumulated[1], rel_tol=1e-4)
    for a, b in zip(big[2], accumulated[2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_clipping_bounds_the_update(corpus_file, tmp_path):
    config = tiny_config(corpus_file)
    config.train.update(dict(optimizer="sgd", momentum=0.0, learning_rate=1.0,
                             lr_schedule="constant", warmup_steps=0, grad_clip_norm=1e-3))
    setup_runtime(config)
    trainer = build_trainer(config, tmp_path / "w")
    before = [v.numpy() for v in trainer.model.trainable_variables]
    _, norm = trainer._train_loop(trainer.train_iterator(0), tf.constant(1))
    assert float(norm) > 1e-3  # the raw gradient was larger than the bound...
    delta = np.sqrt(sum(np.sum((v.numpy() - b) ** 2)
                        for v, b in zip(trainer.model.trainable_variables, before, strict=True)))
    assert delta == pytest.approx(1e-3, rel=1e-3)  # ...and the step has norm lr × clip


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_tracks_float32(corpus_file, tmp_path, precision):
    losses = {}
    for name in ("float32", precision):
        config = tiny_config(corpus_file, steps=50)
        config.runtime.precision = name
        config.train.sample_tokens = 0
        try:
            setup_runtime(config)
            train_lm(config, str(tmp_path / name))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        history = json.loads((tmp_path / name / "history.json").read_text())["history"]
        losses[name] = [h["loss"] for h in history]
    assert losses[precision][-1] < losses[precision][0] - 0.5
    assert abs(losses[precision][-1] - losses["float32"][-1]) < 0.05 * losses["float32"][-1]


def test_early_stopping_stops_and_is_remembered(corpus_file, tmp_path, capsys):
    config = tiny_config(corpus_file, steps=100)
    config.train.update(dict(eval_every=10, checkpoint_every=50, early_stopping_patience=2,
                             early_stopping_min_delta=100.0, sample_tokens=0))
    setup_runtime(config)
    metrics = train_lm(config, str(tmp_path / "w"))
    # The first eval sets the best; two more without a 100-nat improvement stop it.
    assert metrics["step"] == 30 and metrics["early_stopped_at"] == 30
    assert "Early stopping at step 30" in capsys.readouterr().out
    again = train_lm(config, str(tmp_path / "w"))
    assert again["step"] == 30
    assert "nothing to do" in capsys.readouterr().out
