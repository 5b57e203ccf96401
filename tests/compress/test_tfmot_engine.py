"""The non-public tensorflow-model-optimization pieces tfllm builds on still look as expected.

`tfllm/compress/tfmot_engine.py` is the one module importing tfmot's
`python.core` internals (`pruning_impl.Pruning`, `pruning_utils.generate_m_by_n_mask`);
these tests pin their names, signatures and behaviour so that a tfmot upgrade
that moves or changes them fails here, with a message saying where to look.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow as tf

UPDATE = "tensorflow-model-optimization changed: update tfllm/compress/tfmot_engine.py"


def _engine_modules():
    try:
        from tensorflow_model_optimization.python.core.sparsity.keras import (
            pruning_impl,
            pruning_utils,
        )
    except ImportError as e:  # pragma: no cover - only when tfmot moved them
        pytest.fail(f"{UPDATE} ({e})")
    return pruning_impl, pruning_utils


def test_pruning_class_has_the_api_tfllm_uses():
    from tfllm.compress.tfmot_engine import ENGINE_API

    pruning_impl, _ = _engine_modules()
    assert hasattr(pruning_impl, "Pruning"), f"{UPDATE}: pruning_impl.Pruning is gone"
    assert set(ENGINE_API) >= {"conditional_mask_update", "weight_mask_op"}
    for method in ENGINE_API:
        assert callable(getattr(pruning_impl.Pruning, method, None)), (
            f"{UPDATE}: pruning_impl.Pruning.{method} is gone"
        )
    parameters = inspect.signature(pruning_impl.Pruning.__init__).parameters
    for name in (
        "training_step_fn",
        "pruning_vars",
        "pruning_schedule",
        "block_size",
        "block_pooling_type",
        "sparsity_m_by_n",
    ):
        assert name in parameters, (
            f"{UPDATE}: Pruning.__init__ has no {name!r} argument (has {list(parameters)})"
        )


def test_generate_m_by_n_mask_keeps_two_largest_of_every_four():
    from tfllm.compress.tfmot_engine import m_by_n_mask

    _, pruning_utils = _engine_modules()
    assert callable(getattr(pruning_utils, "generate_m_by_n_mask", None)), (
        f"{UPDATE}: pruning_utils.generate_m_by_n_mask is gone"
    )
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 16)).astype(np.float32)
    mask = pruning_utils.generate_m_by_n_mask(tf.constant(weights), (2, 4)).numpy()
    assert mask.shape == (8, 16), f"{UPDATE}: mask shape {mask.shape}"
    assert set(np.unique(mask)) <= {0.0, 1.0}, f"{UPDATE}: mask is not 0/1"
    groups = mask.reshape(8, 4, 4)
    assert (groups.sum(-1) == 2).all(), f"{UPDATE}: not exactly 2 non-zeros in every 4"
    # The kept two are the largest magnitudes of their group (independent reference).
    order = np.argsort(-np.abs(weights.reshape(8, 4, 4)), axis=-1)
    expected = np.zeros_like(groups)
    np.put_along_axis(expected, order[..., :2], 1.0, axis=-1)
    np.testing.assert_array_equal(groups, expected, err_msg=UPDATE)
    # tfllm's wrapper is the same function.
    np.testing.assert_array_equal(m_by_n_mask(tf.constant(weights), (2, 4)).numpy(), mask)


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_magnitude_engine_reaches_the_sparsity_on_a_plain_variable(sparsity):
    import tensorflow_model_optimization as tfmot

    from tfllm.compress.tfmot_engine import magnitude_engine

    rng = np.random.default_rng(1)
    start = rng.normal(size=(10, 20)).astype(np.float32)
    weight = tf.Variable(start)
    mask = tf.Variable(tf.ones_like(start), trainable=False)
    threshold = tf.Variable(0.0, trainable=False)
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    try:
        engine = magnitude_engine(
            lambda: tf.constant(0, tf.int64), [(weight, mask, threshold)], schedule
        )
        engine.conditional_mask_update()
        engine.weight_mask_op()
    except (TypeError, AttributeError) as e:
        pytest.fail(f"{UPDATE} ({type(e).__name__}: {e})")
    pruned = int(round(start.size * sparsity))
    value = weight.numpy()
    assert int((value == 0).sum()) == pruned, f"{UPDATE}: {(value == 0).sum()} zeros"
    # Exactly the `pruned` smallest magnitudes are zeroed; the rest are untouched.
    smallest = np.argsort(np.abs(start).ravel())[:pruned]
    expected = start.ravel().copy()
    expected[smallest] = 0.0
    np.testing.assert_array_equal(value.ravel(), expected, err_msg=UPDATE)
    np.testing.assert_array_equal(mask.numpy() == 0, value == 0, err_msg=UPDATE)
    assert threshold.numpy() == np.sort(np.abs(start).ravel())[pruned], UPDATE
