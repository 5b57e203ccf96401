"""CNNClassifier: Kim (2014)'s convolutional sentence classifier, CNN-rand.

Token embeddings (learned from scratch: "rand"), one Conv1D branch per window
width (3, 4, 5 words by default, 100 ReLU filters each), a max over time per
filter, the branches concatenated, dropout, and a `Dense(num_classes)`. A
filter is an n-gram detector; the max over time asks "does this n-gram occur
anywhere in the sentence", which is why the model is insensitive to where a
phrase sits.

Padding. Batches are padded (id 0, on the right) to their own longest row and
the exported SavedModel must match Keras exactly, so a row's logits must not
depend on how many pads follow it. Pad embeddings are zeroed, and the max over
time reads only the windows that *start* on a real token: output positions
t < max(n_real - width + 1, 1). A window that starts on a pad would see only
zeros (ReLU(bias)) and could win the max in one batch but not in another. A row
shorter than a window keeps exactly one window, position 0, that sees the
whole row and then zeros; the model pads every batch on the right to at least
`max(conv_widths)` so that window exists however short the batch is.

`pooling="max_pool_flatten"` is the seed repo's simpler variant: one "same"
Conv1D, MaxPooling1D(pool_size), Flatten, Dense. Flatten needs a static
length, so the model pads (or truncates) every batch to exactly `max_length`
itself; with zeroed pad embeddings the result is again independent of the
batch's padding. Unlike the global max it is position-dependent (the Dense
sees each pooled position separately) and costs far more head parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfllm.config import CNN_POOLINGS
from tfllm.models.classifier import (
    check_dropout,
    check_num_classes,
    check_positive_int,
    padding_mask,
)


@keras.saving.register_keras_serializable(package="tfllm")
class CNNClassifier(keras.Model):
    """Kim (2014) CNN text classifier returning float32 logits.

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: number of classes (logits per row).
        max_length: longest sequence the model is given.
        embedding_dim: width of the token embeddings.
        conv_widths: window width of each convolution branch ("global_max");
            exactly one width with "max_pool_flatten".
        conv_filters: filters per branch.
        pooling: "global_max" (Kim) or "max_pool_flatten" (the seed's variant).
        pool_size: MaxPooling1D window of "max_pool_flatten" (unused otherwise).
        dropout: dropout rate before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        embedding_dim: int = 128,
        conv_widths: Sequence[int] = (3, 4, 5),
        conv_filters: int = 100,
        pooling: str = "global_max",
        pool_size: int = 2,
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("vocab_size", vocab_size),
            ("max_length", max_length),
            ("embedding_dim", embedding_dim),
            ("conv_filters", conv_filters),
            ("pool_size", pool_size),
        ):
            check_positive_int(name, value)
        check_num_classes(num_classes)
        check_dropout(dropout)
        conv_widths = list(conv_widths)
        if not conv_widths:
            raise ValueError("conv_widths must name at least one window width")
        for width in conv_widths:
            check_positive_int("every conv_widths entry", width)
        if pooling not in CNN_POOLINGS:
            raise ValueError(f"pooling must be one of {CNN_POOLINGS}, got {pooling!r}")
        if pooling == "max_pool_flatten":
            if len(conv_widths) != 1:
                raise ValueError(
                    f'pooling="max_pool_flatten" uses a single convolution: conv_widths must '
                    f"hold exactly one width, got {conv_widths}"
                )
            if pool_size > max_length:
                raise ValueError(f"pool_size ({pool_size}) exceeds max_length ({max_length})")
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.max_length = max_length
        self.embedding_dim = embedding_dim
        self.conv_widths = list(conv_widths)
        self.conv_filters = conv_filters
        self.pooling = pooling
        self.pool_size = pool_size
        self.dropout = dropout

        self.token_embedding = keras.layers.Embedding(
            vocab_size, embedding_dim, dtype=self.dtype_policy, name="token_embedding"
        )
        # One attribute per branch, not a list: tf.train.Checkpoint does not
        # track Keras 3 layers inside a plain Python list.
        conv_padding = "valid" if pooling == "global_max" else "same"
        for i, width in enumerate(self.conv_widths):
            conv = keras.layers.Conv1D(
                conv_filters,
                width,
                padding=conv_padding,
                activation="relu",
                dtype=self.dtype_policy,
                name=f"conv_{i}",
            )
            setattr(self, f"conv_{i}", conv)
        if pooling == "max_pool_flatten":
            self.max_pool = keras.layers.MaxPooling1D(
                pool_size, dtype=self.dtype_policy, name="max_pool"
            )
            self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        # float32 head (Keras' mixed-precision advice for the last layer).
        self.head_dropout = keras.layers.Dropout(dropout, dtype="float32", name="head_dropout")
        self.head = keras.layers.Dense(num_classes, dtype="float32", name="head")

    @property
    def convs(self) -> list[keras.layers.Conv1D]:
        """The convolution branches, in `conv_widths` order."""
        return [getattr(self, f"conv_{i}") for i in range(len(self.conv_widths))]

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """int `[B, T]` ids (0 = padding, on the right) -> float32 logits `[B, C]`."""
        if self.pooling == "global_max":
            features = self._global_max_features(token_ids)
        else:
            features = self._flatten_features(token_ids)
        features = self.head_dropout(tf.cast(features, tf.float32), training=training)
        return tf.cast(self.head(features), tf.float32)

    def _embed(self, token_ids: tf.Tensor) -> tf.Tensor:
        """Token embeddings with pad positions zeroed, `[B, T, E]`."""
        x = self.token_embedding(token_ids)
        return x * tf.cast(padding_mask(token_ids), x.dtype)[:, :, None]

    def _global_max_features(self, token_ids: tf.Tensor) -> tf.Tensor:
        """Kim's max over time per filter, over windows starting on real tokens."""
        widest = max(self.conv_widths)
        short = tf.maximum(widest - tf.shape(token_ids)[1], 0)
        token_ids = tf.pad(token_ids, [[0, 0], [0, short]])
        x = self._embed(token_ids)
        n_real = tf.reduce_sum(tf.cast(padding_mask(token_ids), tf.int32), axis=1)
        pooled = []
        for width, conv in zip(self.conv_widths, self.convs, strict=True):
            h = tf.cast(conv(x), tf.float32)  # [B, T - width + 1, F]
            valid = tf.maximum(n_real - width + 1, 1)
            keep = tf.sequence_mask(valid, tf.shape(h)[1])[:, :, None]
            # ReLU outputs are >= 0, but -inf keeps the max honest regardless.
            pooled.append(tf.reduce_max(tf.where(keep, h, float("-inf")), axis=1))
        return tf.concat(pooled, axis=-1)

    def _flatten_features(self, token_ids: tf.Tensor) -> tf.Tensor:
        """The seed's variant: exactly `max_length` positions, conv, max-pool, flatten."""
        token_ids = token_ids[:, : self.max_length]
        short = self.max_length - tf.shape(token_ids)[1]
        token_ids = tf.pad(token_ids, [[0, 0], [0, short]])
        token_ids = tf.ensure_shape(token_ids, [None, self.max_length])
        x = self.conv_0(self._embed(token_ids))
        return self.flatten(self.max_pool(x))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "max_length": self.max_length,
                "embedding_dim": self.embedding_dim,
                "conv_widths": list(self.conv_widths),
                "conv_filters": self.conv_filters,
                "pooling": self.pooling,
                "pool_size": self.pool_size,
                "dropout": self.dropout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CNNClassifier:
        return cls(**config)
