"""The Llama model: the shared harness (tests/harness.py), causality, KV-cache decoding.

Its numerics against transformers are in tests/pretrained/test_llama_import.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from harness import ModelTests, run_cache_test

from tfllm.models.llama import Llama, rope_inverse_frequencies

# Grouped-query attention (4 query heads over 2 key/value heads), untied head.
TINY = dict(
    vocab_size=50, max_length=16, num_layers=2, num_heads=4, num_kv_heads=2,
    hidden_dim=32, intermediate_dim=48, tie_embeddings=False,
)  # fmt: skip


def random_ids(batch: int, length: int, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 50, size=(batch, length)), tf.int32)


class TestLlamaHarness(ModelTests):
    """Forward, config/keras serialization, mixed precision, checkpoint and `.keras` round trips."""

    model_class = Llama
    # Non-default RoPE settings and epsilon, so the config round trip shows they are kept.
    init_kwargs = {**TINY, "rope_theta": 500.0, "norm_epsilon": 1e-6,
                   "rope_scaling": [8.0, 1.0, 4.0, 8]}  # fmt: skip
    input_data = random_ids(2, 16).numpy()
    expected_output_shape = (2, 16, 50)
    # embedding + head + 2 blocks x 9 tensors + final norm.
    expected_num_weights = 2 + 2 * 9 + 1
    # RMSNorm and RoPE in half precision move the logits of random weights a little more.
    precision_tolerance = {"mixed_bfloat16": 0.25, "mixed_float16": 0.05}


@pytest.mark.parametrize("cache_update", ["slice", "blend"])
@pytest.mark.parametrize("prefill", [1, 5])
def test_kv_cache_decoding_matches_full_forward(prefill: int, cache_update: str) -> None:
    run_cache_test(
        Llama,
        TINY,
        random_ids(2, 16, seed=prefill).numpy(),
        prefill=prefill,
        call_kwargs={"cache_update": cache_update},
        # per layer (keys, values), each [B, num_kv_heads, T, Dh]: the grouped cache
        expected_cache_shapes=[(2, 2, 16, 8)] * 4,
        atol=1e-4,
    )


def test_changing_a_future_token_never_changes_earlier_logits() -> None:
    model = Llama(**TINY)
    ids = random_ids(1, 12).numpy()
    changed = ids.copy()
    changed[0, 7] = (changed[0, 7] + 1) % 50
    a, b = model(tf.constant(ids)).numpy(), model(tf.constant(changed)).numpy()
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-4


def test_llama3_rope_scaling_only_slows_the_low_frequencies() -> None:
    plain = rope_inverse_frequencies(64, 500000.0)
    scaled = rope_inverse_frequencies(64, 500000.0, 8.0, 1.0, 4.0, 8192)
    assert scaled[0] == plain[0]  # high frequencies (short wavelengths) are kept
    np.testing.assert_allclose(scaled[-1], plain[-1] / 8.0, rtol=1e-6)  # low ones divided
    assert np.all(scaled <= plain + 1e-12)


def test_bad_head_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        Llama(**{**TINY, "num_kv_heads": 3})
