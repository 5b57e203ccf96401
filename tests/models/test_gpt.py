"""Tests for the GPT model: config round trip, causality, KV-cache decoding."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

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


def test_forward_shape_dtype_and_all_weights_built() -> None:
    model = tiny_gpt()
    logits = model(random_ids(2, 7))
    assert logits.shape == (2, 7, 50)
    assert logits.dtype == tf.float32
    # 2 embeddings + 2 blocks x 16 tensors + final norm (2).
    assert len(model.weights) == 2 + 2 * 16 + 2
    assert model.count_params() > 0


def test_config_round_trip_gives_identical_logits() -> None:
    model = tiny_gpt(dropout=0.1, layer_norm_epsilon=1e-6)
    config = model.get_config()
    for key, value in {**TINY, "dropout": 0.1, "layer_norm_epsilon": 1e-6}.items():
        assert config[key] == value
    clone = GPT.from_config(config)
    clone(tf.zeros([1, 16], tf.int32))
    clone.set_weights(model.get_weights())
    ids = random_ids(2, 16)
    np.testing.assert_array_equal(model(ids).numpy(), clone(ids).numpy())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(restored, GPT)
    assert restored.get_config() == config


def test_keras_file_round_trip(tmp_path: object) -> None:
    model = tiny_gpt()
    path = f"{tmp_path}/gpt.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    ids = random_ids(1, 9)
    np.testing.assert_allclose(model(ids).numpy(), loaded(ids).numpy(), atol=1e-6)


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
    """Our cached path (fused Q/K/V, heads-major cache) against keras-hub's full forward."""
    model = tiny_gpt()
    ids = random_ids(2, 16, seed=prefill)
    full = model(ids).numpy()
    cache = model.init_cache(2)
    # per layer (keys, values), each [B, H, T, Dh]
    assert [(k.shape, v.shape) for k, v in cache] == [((2, 2, 16, 8), (2, 2, 16, 8))] * 2
    logits, cache = model.call_with_cache(ids[:, :prefill], cache, 0, cache_update)
    np.testing.assert_allclose(logits.numpy(), full[:, :prefill], atol=1e-4)
    for i in range(prefill, 16):
        logits, cache = model.call_with_cache(
            ids[:, i : i + 1], cache, tf.constant(i), cache_update
        )
        assert logits.shape == (2, 1, 50) and logits.dtype == tf.float32
        np.testing.assert_allclose(logits.numpy()[:, 0], full[:, i], atol=1e-4)


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


def test_mixed_precision_logits_are_float32() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_gpt()
        logits = model(random_ids(1, 4))
        cache = model.init_cache(1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == tf.float32
    assert {c.dtype for c in tf.nest.flatten(cache)} == {tf.bfloat16}
    step_logits, _ = model.call_with_cache(random_ids(1, 3), cache, 0)
    assert step_logits.dtype == tf.float32


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
