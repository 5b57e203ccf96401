"""Gradient checkpointing of transformer blocks (`config.runtime.remat`).

A block's activations are dropped after the forward pass and recomputed from
its input during the backward pass: training keeps one `[B, T, D]` tensor per
block instead of every intermediate (attention probabilities, MLP hidden
states), for about one more forward pass of compute. With LoRA the frozen
weights' gradients and Adam slots are gone already, so activations are most of
what a fine-tune holds: this is the knob that brings its memory down further.

Why not `keras.RematScope`: with the TensorFlow backend it wraps a layer's
`call` in `tf.custom_gradient`, which refuses keyword arguments inside a
`tf.function` ("supports keywords arguments only when eager execution is
enabled"), and every block here is called with `training=` and masks. So the
families' block loops call `checkpointed`, which closes over the keyword
arguments and hands `tf.recompute_grad` the residual stream alone.

Dropout is refused with remat (`tfllm.config.relations.check_remat`): the
recomputation would draw fresh dropout masks (Keras' seed generator has moved
on), so the gradients would belong to a different network than the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def checkpointed(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, enabled: bool) -> tf.Tensor:
    """`fn(x)`, with `fn`'s activations recomputed in the backward pass when `enabled`.

    `fn` must read everything but `x` from its closure (masks, `training`) and
    return one tensor.
    """
    if not enabled:
        return fn(x)
    return tf.recompute_grad(fn)(x)


def enable_remat(model: keras.Model) -> int:
    """Turns on block checkpointing in `model` and every nested model that supports it
    (the families with a `remat_blocks` switch); returns how many were switched."""
    switched = 0
    for layer in model._flatten_layers(include_self=True):  # noqa: SLF001 (Keras' own walk)
        if hasattr(layer, "remat_blocks"):
            layer.remat_blocks = True
            switched += 1
    return switched
