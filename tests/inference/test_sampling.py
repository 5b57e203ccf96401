"""Tests for the stateless samplers and their argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfllm.errors import ConfigError
from tfllm.inference.sampling import check_sampler_args, sample_next

PROBS = np.array([0.5, 0.3, 0.15, 0.05], np.float32)


def draws(
    logits: np.ndarray, sampler: str, rows: int = 2000, seed: int = 0, **kwargs: object
) -> set[int]:
    """The set of ids drawn for `rows` copies of one row of logits."""
    batch = tf.tile(tf.constant(logits[None, :], tf.float32), [rows, 1])
    ids = sample_next(batch, sampler, seed=tf.constant([seed, 1]), **kwargs)
    assert ids.dtype == tf.int32 and ids.shape == (rows,)
    return set(ids.numpy().tolist())


def test_greedy_is_argmax_and_ignores_seed() -> None:
    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 30)), tf.float32)
    expected = np.argmax(logits.numpy(), -1)
    for seed in ([0, 0], [5, 9]):
        got = sample_next(logits, "greedy", seed=tf.constant(seed))
        np.testing.assert_array_equal(got.numpy(), expected)


def test_temperature_seeded_and_stateless() -> None:
    logits = tf.zeros([8, 1000])
    first = sample_next(logits, "temperature", 1.0, seed=tf.constant([3, 4]))
    again = sample_next(logits, "temperature", 1.0, seed=tf.constant([3, 4]))
    other = sample_next(logits, "temperature", 1.0, seed=tf.constant([3, 5]))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    traced = tf.function(lambda x, t, s: sample_next(x, "temperature", t, seed=s))(
        logits, tf.constant(1.0), tf.constant([3, 4])
    )
    np.testing.assert_array_equal(first.numpy(), traced.numpy())


def test_temperature_frequencies_follow_softmax() -> None:
    batch = tf.tile(tf.constant(np.log(PROBS)[None, :]), [20000, 1])
    ids = sample_next(batch, "temperature", seed=tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(np.bincount(ids, minlength=4) / 20000, PROBS, atol=0.015)
    hot = sample_next(batch, "temperature", 2.0, seed=tf.constant([1, 2])).numpy()
    flat = np.sqrt(PROBS) / np.sqrt(PROBS).sum()  # softmax(log p / 2)
    np.testing.assert_allclose(np.bincount(hot, minlength=4) / 20000, flat, atol=0.015)


def test_low_temperature_approaches_greedy() -> None:
    logits = np.log(PROBS)
    assert draws(logits, "temperature", temperature=0.01) == {0}
    assert draws(logits, "temperature", temperature=1.0) == {0, 1, 2, 3}


def test_top_k_never_leaves_the_top_k() -> None:
    logits = np.random.default_rng(1).normal(size=50).astype(np.float32)
    top5 = set(np.argsort(-logits)[:5].tolist())
    seen: set[int] = set()
    for seed in range(5):
        got = draws(logits, "top_k", seed=seed, top_k=5, temperature=3.0)
        assert got <= top5
        seen |= got
    assert seen == top5  # it samples, not just argmax
    assert draws(logits, "top_k", top_k=1) == {int(np.argmax(logits))}


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.3, {0}),
        (0.5, {0}),
        (0.7, {0, 1}),
        (0.8, {0, 1}),
        (0.81, {0, 1, 2}),
        (0.96, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p: float, expected: set[int]) -> None:
    # Shuffle the vocabulary order so sorting is actually exercised.
    order = np.array([2, 0, 3, 1])
    logits = np.log(PROBS)[order]
    got = {int(order[i]) for i in draws(logits, "top_p", top_p=top_p)}
    assert got == expected


def test_tensor_args_do_not_retrace() -> None:
    fn = tf.function(
        lambda x, k, p, s: (
            sample_next(x, "top_k", 1.0, k, 1.0, s),
            sample_next(x, "top_p", 1.0, 0, p, s),
        )
    )
    logits = tf.constant(np.log(PROBS)[None, :])
    for k, p in ((1, 0.5), (3, 0.9)):
        fn(logits, tf.constant(k), tf.constant(p), tf.constant([0, 0]))
    assert fn.experimental_get_tracing_count() == 1


def test_xla_matches_eager_for_the_same_seed() -> None:
    logits = tf.constant(np.random.default_rng(2).normal(size=(16, 40)), tf.float32)
    seed = tf.constant([7, 7])
    for sampler in ("temperature", "top_k", "top_p"):
        eager = sample_next(logits, sampler, 1.0, 10, 0.9, seed)
        xla = tf.function(
            lambda x, s, name=sampler: sample_next(x, name, 1.0, 10, 0.9, s),
            jit_compile=True,
        )(logits, seed)
        np.testing.assert_array_equal(eager.numpy(), xla.numpy())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("beam", 1.0, 0, 1.0, 5), "--sampler must be one of greedy, temperature, top_k, top_p"),
        (("temperature", 0.0, 0, 1.0, 5), "--temperature must be > 0"),
        (("top_k", 1.0, 0, 1.0, 5), "--top_k must be ≥ 1"),
        (("greedy", 1.0, -1, 1.0, 5), "--top_k must be ≥ 1"),
        (("top_p", 1.0, 0, 0.0, 5), r"--top_p must be in \(0, 1\]"),
        (("top_p", 1.0, 0, 1.5, 5), r"--top_p must be in \(0, 1\]"),
        (("greedy", 1.0, 0, 1.0, 0), "--max_new_tokens must be ≥ 1"),
    ],
)
def test_check_sampler_args_names_the_flag(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_sampler_args(*args)


def test_check_sampler_args_accepts_defaults() -> None:
    for sampler in ("greedy", "temperature", "top_p"):
        check_sampler_args(sampler, 1.0, 0, 1.0, 1)
    check_sampler_args("top_k", 0.7, 40, 0.9, 100)
