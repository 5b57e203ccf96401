"""Language-model metrics: mean token cross-entropy and perplexity.

Perplexity is exp(mean token negative log-likelihood) over every predicted
token of the split, computed with Keras' cross-entropy on fixed windows of the
model's context length (the same windows the trainer evaluates on). An
instruction-tuned run is measured on what it learned: its response tokens.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.instruction_data import EncodedPairs, length_sorted_batches
from tfllm.data.lm_data import eval_dataset
from tfllm.distribute.rows import RowSharder
from tfllm.evaluation.predict import token_cross_entropy


def lm_loss_and_perplexity(
    model: keras.Model, ids: np.ndarray, seq_len: int, batch_size: int, max_batches: int = 0
) -> dict[str, float]:
    """Mean token loss and perplexity of `model` on the token stream `ids`."""

    @tf.function
    def batch_sums(inputs, targets):
        ce = token_cross_entropy(targets, model(inputs, training=False))
        return tf.reduce_sum(ce), tf.size(ce)

    total, count = 0.0, 0
    for i, (inputs, targets) in enumerate(eval_dataset(ids, seq_len, batch_size)):
        if max_batches and i >= max_batches:
            break
        s, n = batch_sums(inputs, targets)
        total += float(s)
        count += int(n)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def response_loss_and_perplexity(
    model: keras.Model, pairs: EncodedPairs, batch_size: int, max_batches: int = 0
) -> dict[str, float]:
    """Mean loss and perplexity over the response tokens of prompt/response rows
    (an instruction-tuned run's own measure; `InstructionTask.evaluate` in training).

    With `max_batches`, the first `max_batches * batch_size` rows in file order.
    Rows are scored in length-sorted batches cut to their longest row
    (`length_sorted_batches`): the same sums, without the padding.
    """

    @tf.function
    def batch_sums(ids, weights):
        ce = token_cross_entropy(ids[:, 1:], model(ids[:, :-1], training=False))
        return tf.reduce_sum(tf.cast(ce, tf.float32) * weights), tf.reduce_sum(weights)

    if max_batches:
        pairs = EncodedPairs(
            pairs.ids[: max_batches * batch_size], pairs.weights[: max_batches * batch_size], 0, 0
        )
    total, count = 0.0, 0.0
    for _, ids, weights in length_sorted_batches(pairs, batch_size):
        s, n = batch_sums(tf.constant(ids), tf.constant(weights))
        total, count = total + float(s), count + float(n)
    loss = total / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(count)}


def lm_loss_sharded(
    model: keras.Model,
    strategy,
    ids: np.ndarray,
    seq_len: int,
    batch_size: int,
    max_batches: int = 0,
    progress=None,
) -> dict[str, float]:
    """Mean token loss and perplexity over the windows one device evaluates.

    The same windows as `tfllm.evaluation.metrics.lm_loss_and_perplexity`
    (`eval_dataset`: in order, whole batches of `batch_size`); every global
    batch is sharded over replicas and each window's summed cross-entropy comes
    back in order, then is added up in float64 in window order, so the total
    does not depend on how many replicas computed it.
    """

    def per_window(values):
        inputs, targets = values
        ce = token_cross_entropy(targets, model(inputs, training=False))
        return tf.reduce_sum(tf.cast(ce, tf.float32), axis=-1)

    sharder = RowSharder(strategy, per_window)
    total, count = 0.0, 0
    for i, (inputs, targets) in enumerate(eval_dataset(ids, seq_len, batch_size)):
        if max_batches and i >= max_batches:
            break
        sums = sharder((inputs.numpy(), targets.numpy()))
        total += float(np.sum(sums.astype(np.float64)))
        count += int(np.prod(inputs.shape))
        if progress is not None:
            progress.update(int(inputs.shape[0]))
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
