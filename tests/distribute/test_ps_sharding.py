"""Sharded (parameter-server) Keras variables: gradients per shard, layout-free checkpoints.

A `ShardedVariable` is placed inside a Keras Embedding by hand, as
ParameterServerStrategy's partitioner does on a real cluster; the real
cluster runs in tests/training/test_distributed.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.distribute.sharded_variable import ShardedVariable

from tfllm.distribute.ps_sharding import (
    expand_sharded,
    make_checkpointable,
    sharded_summary,
    shards_of,
)

FULL = np.arange(40, dtype=np.float32).reshape(10, 4)


def sharded_embedding(rows: tuple[int, ...] = (5, 5)) -> keras.layers.Embedding:
    layer = keras.layers.Embedding(10, 4, name="table")
    layer.build((None,))
    parts, start = [], 0
    for n in rows:
        parts.append(tf.Variable(FULL[start : start + n]))
        start += n
    layer.embeddings._value = ShardedVariable(parts)
    return layer


def plain_embedding(value=None) -> keras.layers.Embedding:
    layer = keras.layers.Embedding(10, 4, name="table")
    layer.build((None,))
    if value is not None:
        layer.embeddings.assign(value)
    return layer


def test_shards_replace_their_variable_in_order():
    layer = sharded_embedding()
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    variables = [*layer.trainable_variables, *dense.trainable_variables]
    expanded = expand_sharded(variables)
    assert len(expanded) == 4  # 2 shards + kernel + bias
    assert [tuple(v.shape) for v in expanded[:2]] == [(5, 4), (5, 4)]
    assert expanded[2] is dense.kernel
    assert sharded_summary(variables) == {"table/embeddings": 2}
    assert shards_of(dense.kernel) is None


def test_gradients_reach_each_shard():
    layer = sharded_embedding()
    shards = expand_sharded(layer.trainable_variables)
    with tf.GradientTape() as tape:
        out = tf.nn.embedding_lookup(layer.embeddings.value, tf.constant([1, 7]))
        loss = tf.reduce_sum(out)
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, shards)]
    assert float(tf.reduce_sum(grads[0][1])) == 4.0  # row 1 lives in shard 0
    assert float(tf.reduce_sum(grads[1][2])) == 4.0  # row 7 is row 2 of shard 1
    assert float(tf.reduce_sum(grads[0])) + float(tf.reduce_sum(grads[1])) == 8.0


@pytest.mark.parametrize("rows", [(5, 5), (4, 3, 3)])
def test_sharded_checkpoint_restores_on_one_device_and_back(tmp_path, rows):
    layer = sharded_embedding(rows)
    assert make_checkpointable(layer.variables) == 1
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "sharded" / "ckpt"))

    # sharded -> one device: identical values
    plain = plain_embedding()
    tf.train.Checkpoint(layer=plain).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(plain.embeddings.numpy(), FULL)

    # sharded -> sharded (resume): every shard comes back, not only the first
    for shard in shards_of(layer.embeddings):
        shard.assign(tf.zeros_like(shard))
    tf.train.Checkpoint(layer=layer).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(tf.concat(shards_of(layer.embeddings), 0).numpy(), FULL)

    # one device -> sharded
    source = plain_embedding(FULL * 2)
    plain_path = tf.train.Checkpoint(layer=source).save(str(tmp_path / "plain" / "ckpt"))
    tf.train.Checkpoint(layer=layer).restore(plain_path).assert_existing_objects_matched()
    np.testing.assert_array_equal(tf.concat(shards_of(layer.embeddings), 0).numpy(), FULL * 2)


def test_unsharded_variables_keep_keras_checkpointing():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    before = type(dense.kernel)
    assert make_checkpointable(dense.variables) == 0
    assert type(dense.kernel) is before
