"""`restore_weights`: the one restore-and-check every stage uses."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.errors import WorkdirError
from tfllm.utils.checkpoints import restore_weights


def _dense(units: int, use_bias: bool = True) -> keras.layers.Dense:
    layer = keras.layers.Dense(units, use_bias=use_bias)
    layer.build((None, 3))
    return layer


def test_restores_matching_objects_and_ignores_extra_values_when_partial(tmp_path):
    source = _dense(2)
    optimizer = keras.optimizers.Adam()
    optimizer.build(source.trainable_variables)
    path = tf.train.Checkpoint(model=source, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    target = _dense(2)
    restore_weights(path, {"model": target}, partial=True)
    np.testing.assert_array_equal(target.kernel.numpy(), source.kernel.numpy())
    checkpoint = tf.train.Checkpoint(model=_dense(2))
    restore_weights(path, checkpoint, partial=True)  # a Checkpoint is accepted as is


def test_a_mismatch_names_the_checkpoint_or_raises_tensorflows_error(tmp_path):
    path = tf.train.Checkpoint(model=_dense(2, use_bias=False)).save(str(tmp_path / "ckpt"))
    wrong = {"model": _dense(2)}  # its bias is not in the checkpoint
    with pytest.raises(WorkdirError, match=r"ckpt-1: does not match the model \("):
        restore_weights(path, wrong, partial=True, mismatch="does not match the model")
    with pytest.raises(AssertionError):
        restore_weights(path, {"other": _dense(2)})
