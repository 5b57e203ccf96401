"""Language-model metrics: mean token cross-entropy and perplexity.

Perplexity is exp(mean token negative log-likelihood) over every predicted
token of the split, computed with Keras' cross-entropy on fixed windows of the
model's context length (the same windows the trainer evaluates on).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.lm_data import eval_dataset
from tfllm.training.tasks import token_cross_entropy


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
