"""Tests for the GPT model: the shared harness (tests/harness.py), causality, KV-cache decoding."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from harness import ModelTests, run_cache_test, run_precision_test

from tfllm.errors import ConfigError
from tfllm.models import build_model
from tfllm.models.gpt import GPT

TINY = dict(
    vocab_size=50,
    max_length=16,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
)


def tiny_gpt(**overrides: object) -> GPT:
    keras.utils.set_random_seed(1)
    model = GPT(**{**TINY, **overrides})
    model(tf.zeros([1, TINY["max_length"]], tf.int32))
    return model


def random_ids(batch: int, length: int, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, TINY["vocab_size"], (batch, length)), tf.int32)


class TestGPTHarness(ModelTests):
    """The shared harness: forward, config/keras serialization, mixed precision,
    checkpoint and `.keras` round trips (tests/harness.py)."""

    model_class = GPT
    # Non-default dropout and epsilon, so the config round trip shows they are kept.
    init_kwargs = {**TINY, "dropout": 0.1, "layer_norm_epsilon": 1e-6}
    input_data = random_ids(2, 16).numpy()
    expected_output_shape = (2, 16, 50)
    # 2 embeddings + 2 blocks x 16 tensors + final norm (2).
    expected_num_weights = 2 + 2 * 16 + 2

    def test_precision(self) -> None:
        """Float32 logits under each policy; the KV cache in the compute dtype and the
        cached step's logits float32 too."""
        models = run_precision_test(self.model_class, self.init_kwargs, self.input_data)
        for name, model in models.items():
            cache = model.init_cache(1)
            compute_dtype = tf.as_dtype(model.compute_dtype)
            assert {c.dtype for c in tf.nest.flatten(cache)} == {compute_dtype}, name
            step_logits, _ = model.call_with_cache(random_ids(1, 3), cache, 0)
            assert step_logits.dtype == tf.float32, name


def test_changing_a_future_token_never_changes_earlier_logits() -> None:
    model = tiny_gpt()
    ids = random_ids(1, 16).numpy()
    base = model(tf.constant(ids)).numpy()
    for j in (1, 8, 15):
        changed = ids.copy()
        changed[0, j] = (changed[0, j] + 7) % 50
        logits = model(tf.constant(changed)).numpy()
        np.testing.assert_allclose(logits[:, :j], base[:, :j], atol=1e-6)
        assert np.abs(logits[:, j] - base[:, j]).max() > 1e-4  # the change is seen


def test_dropout_only_in_training() -> None:
    model = tiny_gpt(dropout=0.5)
    ids = random_ids(1, 8)
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())
    assert np.abs(model(ids, training=True).numpy() - model(ids).numpy()).max() > 1e-4


@pytest.mark.parametrize("cache_update", ["slice", "blend"])
@pytest.mark.parametrize("prefill", [1, 5])
def test_kv_cache_decoding_matches_full_forward(prefill: int, cache_update: str) -> None:
    """Our cached path (heads-major cache) against keras-hub's full forward (harness)."""
    run_cache_test(
        GPT,
        TINY,
        random_ids(2, 16, seed=prefill).numpy(),
        prefill=prefill,
        call_kwargs={"cache_update": cache_update},
        # per layer (keys, values), each [B, H, T, Dh]
        expected_cache_shapes=[(2, 2, 16, 8)] * 4,
        atol=1e-4,
    )


def test_unknown_cache_update_is_refused() -> None:
    model = tiny_gpt()
    with pytest.raises(ValueError, match="cache_update must be one of"):
        model.call_with_cache(random_ids(1, 2), model.init_cache(1), 0, "scatter")


def test_cached_step_in_tf_function_and_xla() -> None:
    model = tiny_gpt()
    ids = random_ids(1, 16)
    full = model(ids).numpy()
    prefill = tf.function(
        lambda x: model.call_with_cache(x, model.init_cache(1), 0),
        input_signature=[tf.TensorSpec([1, None], tf.int32)],
    )
    step = tf.function(model.call_with_cache, jit_compile=True)
    _, cache = prefill(ids[:, :4])
    for i in range(4, 8):
        logits, cache = step(ids[:, i : i + 1], cache, tf.constant(i, tf.int32))
        np.testing.assert_allclose(logits.numpy()[:, 0], full[:, i], atol=1e-4)
    assert step.experimental_get_tracing_count() == 1


def test_param_and_flop_accounting() -> None:
    model = tiny_gpt()
    positions = 16 * 16
    assert model.num_params() == model.count_params()
    assert model.num_params(include_position_embedding=False) == (model.count_params() - positions)
    n = model.count_params() - positions
    assert model.flops_per_token(16) == 6 * n + 12 * 2 * 16 * 16


def model_config(**overrides: object) -> ml_collections.ConfigDict:
    config = dict(
        name="gpt",
        max_length=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        dropout=0.0,
    )
    return ml_collections.ConfigDict({**config, **overrides})


def test_build_model_builds_variables() -> None:
    model = build_model(model_config(), vocab_size=50)
    assert isinstance(model, GPT)
    assert model.built and model.count_params() > 0
    assert model.vocab_size == 50 and model.num_layers == 2


def test_build_model_rejects_unknown_name_and_bad_heads() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'x' \(available: gpt,"):
        build_model(model_config(name="x"), vocab_size=50)
    with pytest.raises(ConfigError, match="divisible"):
        build_model(model_config(num_heads=3), vocab_size=50)
