"""Tests for KV-cache generation: equivalence with a naive loop, seeds, eos."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.errors import ConfigError
from tfllm.inference.generate import Generator, fit_prompt, generate_ids, generate_text
from tfllm.models.gpt import GPT

MAX_LENGTH = 16


@pytest.fixture(scope="module")
def model() -> GPT:
    keras.utils.set_random_seed(3)
    gpt = GPT(
        vocab_size=50,
        max_length=MAX_LENGTH,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    gpt(tf.zeros([1, MAX_LENGTH], tf.int32))
    return gpt


def naive_greedy(model: GPT, prompt: np.ndarray, n: int) -> np.ndarray:
    """Re-run the full forward pass for every new token (no cache)."""
    seq = np.asarray(prompt, np.int32)
    for _ in range(n):
        nxt = np.argmax(model(tf.constant(seq)).numpy()[:, -1], axis=-1)
        seq = np.concatenate([seq, nxt[:, None].astype(np.int32)], axis=1)
    return seq[:, prompt.shape[1] :]


@pytest.mark.parametrize(("prompt_len", "n"), [(1, 10), (3, 13), (6, 4)])
def test_greedy_matches_naive_loop(model: GPT, prompt_len: int, n: int) -> None:
    prompt = np.random.default_rng(prompt_len).integers(0, 50, (2, prompt_len))
    got = generate_ids(model, prompt, n)
    assert got.dtype == tf.int32 and got.shape == (2, n)
    np.testing.assert_array_equal(got.numpy(), naive_greedy(model, prompt, n))


def test_generator_greedy_matches_naive_loop_with_and_without_xla(model: GPT) -> None:
    prompt = np.array([4, 8, 15, 16], np.int32)
    expected = naive_greedy(model, prompt[None, :], 12)[0]
    for use_xla in (False, True):
        np.testing.assert_array_equal(
            Generator(model, use_xla=use_xla).generate(prompt, 12), expected
        )


def test_seeds_are_reproducible_and_distinct(model: GPT) -> None:
    prompt = tf.constant([[1, 2, 3]])

    def run(seed: tuple[int, int]) -> np.ndarray:
        return generate_ids(
            model, prompt, 12, sampler="temperature", temperature=2.0, seed=seed
        ).numpy()

    np.testing.assert_array_equal(run((5, 0)), run((5, 0)))
    assert not np.array_equal(run((5, 0)), run((6, 0)))
    np.testing.assert_array_equal(
        generate_ids(model, prompt, 12).numpy(), generate_ids(model, prompt, 12).numpy()
    )


def test_generator_same_tokens_eager_graph_and_xla(model: GPT) -> None:
    prompt = np.array([[7, 9, 11]], np.int32)
    eager = generate_ids(
        model,
        prompt,
        10,
        sampler="top_p",
        temperature=1.5,
        top_p=0.95,
        seed=tf.constant([42, 0], tf.int64),
    ).numpy()
    for use_xla in (False, True):
        got = Generator(model, use_xla=use_xla).generate(
            prompt, 10, sampler="top_p", temperature=1.5, top_p=0.95, seed=42
        )
        np.testing.assert_array_equal(got, eager)


def test_dynamic_shape_function_traces_once(model: GPT) -> None:
    fn = tf.function(
        lambda ids, n, seed: generate_ids(model, ids, n, sampler="top_k", top_k=5, seed=seed),
        input_signature=[
            tf.TensorSpec([1, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ],
    )
    for prompt_len, n in ((2, 5), (7, 9)):
        prompt = tf.range(1, prompt_len + 1)[tf.newaxis, :]
        seed = tf.constant([1, 2])
        got = fn(prompt, tf.constant(n), seed)
        assert got.shape == (1, n)
        expected = generate_ids(model, prompt, n, sampler="top_k", top_k=5, seed=seed)
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert fn.experimental_get_tracing_count() == 1


def test_generator_does_not_retrace(model: GPT) -> None:
    generator = Generator(model, use_xla=False)
    for prompt_len, n, temperature in ((2, 5, 1.0), (5, 3, 0.5), (3, 8, 2.0)):
        generator.generate(
            list(range(1, prompt_len + 1)),
            n,
            sampler="temperature",
            temperature=temperature,
            seed=prompt_len,
        )
    (prefill,) = generator._prefills.values()  # one cache bucket: context 16 < 64
    assert prefill.experimental_get_tracing_count() == 1
    assert generator._decoder("temperature", None).experimental_get_tracing_count() == 1


def test_eos_pads_the_rest(model: GPT) -> None:
    prompt = np.array([[3, 1, 4], [1, 5, 9]], np.int32)
    free = generate_ids(model, prompt, 12).numpy()
    eos = int(free[0, 2])
    stop = int(np.flatnonzero(free[0] == eos)[0])
    got = generate_ids(model, prompt, 12, eos_id=eos).numpy()
    np.testing.assert_array_equal(got[0, : stop + 1], free[0, : stop + 1])
    assert (got[0, stop:] == eos).all()
    row1 = free[1]
    hits = np.flatnonzero(row1 == eos)
    end = hits[0] + 1 if hits.size else 12
    np.testing.assert_array_equal(got[1, :end], row1[:end])
    assert (got[1, end:] == eos).all()
    # A row that never emits eos is untouched.
    other = [t for t in range(50) if t not in free[0] and t not in free[1]][0]
    np.testing.assert_array_equal(generate_ids(model, prompt, 12, eos_id=other).numpy(), free)


def test_fills_the_context_exactly(model: GPT) -> None:
    prompt = np.arange(1, 7, dtype=np.int32)[None, :]
    got = generate_ids(model, prompt, MAX_LENGTH - 6)
    np.testing.assert_array_equal(got.numpy(), naive_greedy(model, prompt, MAX_LENGTH - 6))


def test_fit_prompt_truncates_left_and_clamps() -> None:
    prompt, n = fit_prompt(list(range(10)), 8, max_length=16)
    assert n == 8 and prompt.tolist() == list(range(2, 10))
    prompt, n = fit_prompt(np.arange(20).reshape(2, 10), 100, max_length=16)
    assert n == 15 and prompt.tolist() == [[9], [19]]
    prompt, n = fit_prompt([1, 2], 3, max_length=16)
    assert n == 3 and prompt.tolist() == [1, 2]


def test_generator_fits_long_prompts(model: GPT) -> None:
    prompt = list(range(1, 15))
    got = Generator(model, use_xla=False).generate(prompt, 100)
    assert got.shape == (MAX_LENGTH - 1,)
    expected = naive_greedy(model, np.array([prompt[-1:]]), MAX_LENGTH - 1)[0]
    np.testing.assert_array_equal(got, expected)


def test_generator_rejects_bad_sampling_args(model: GPT) -> None:
    generator = Generator(model, use_xla=False)
    with pytest.raises(ConfigError, match="--top_p"):
        generator.generate([1], 4, sampler="top_p", top_p=0.0)
    with pytest.raises(ConfigError, match="--sampler"):
        generator.generate([1], 4, sampler="nucleus")


class CharTokenizer:
    """Ids 4.. are letters a..z; other ids decode as '?'."""

    bos_id = 2

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") + 4 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 4 + ord("a")) if 4 <= i < 30 else "?" for i in ids)


def test_generate_text_returns_continuations_cut_at_eos(model: GPT) -> None:
    generator = Generator(model, use_xla=False)
    free = generator.generate([4, 5, 6], 6).tolist()
    eos = free[2]  # make the model "emit eos" at step 2 or earlier
    tokenizer = CharTokenizer(eos_id=eos)
    texts = generate_text(generator, tokenizer, ["abc", ""], 6)
    assert texts[0] == tokenizer.decode(free[: free.index(eos)])
    from_eos = generator.generate([eos], 6, eos_id=eos).tolist()
    cut = from_eos.index(eos) if eos in from_eos else 6
    assert texts[1] == tokenizer.decode(from_eos[:cut])


def test_bucketed_cache_gives_the_same_tokens_as_the_full_context_cache() -> None:
    from tfllm.inference.generate import cache_length

    keras.utils.set_random_seed(4)
    long_model = GPT(vocab_size=50, max_length=160, num_layers=2, num_heads=2,
                     hidden_dim=16, intermediate_dim=32)
    long_model(tf.zeros([1, 160], tf.int32))
    assert cache_length(5 + 15, 160) == 64 and cache_length(150, 160) == 160
    prompt = np.array([[3, 1, 4, 1, 5]], np.int32)
    generator = Generator(long_model)
    np.testing.assert_array_equal(
        generator.generate(prompt, 15), naive_greedy(long_model, prompt, 15))
    sampled = generator.generate(prompt, 15, sampler="top_p", top_p=0.9, seed=11)
    full_cache = generate_ids(long_model, prompt, 15, sampler="top_p", top_p=0.9,
                              seed=tf.constant([11, 0], tf.int64))  # a 160-slot cache
    np.testing.assert_array_equal(sampled, full_cache.numpy())
