"""MLPClassifier: a bag of embeddings, averaged, then a small ReLU MLP.

The simplest baseline worth having (Iyyer et al. 2015's "deep averaging
network", fastText without n-grams): embed every token, average the embeddings
of the real tokens, and classify the average with `len(hidden_dims)` ReLU
layers (dropout after each) and a `Dense(num_classes)`. Word order is ignored
entirely, so whatever a sequence model gains over it is what order is worth.

Padding. The average is a *masked* mean over non-pad tokens (`token_ids != 0`),
divided by the number of real tokens: an unmasked mean would shrink towards the
pad embedding as a batch's padding grows, so a row's logits would depend on its
neighbours in the batch (and the exported SavedModel would not match Keras).
A row with no real token divides by 1 and yields zeros, not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfllm.models.classifier import (
    check_dropout,
    check_num_classes,
    check_positive_int,
    masked_mean,
    padding_mask,
)


@keras.saving.register_keras_serializable(package="tfllm")
class MLPClassifier(keras.Model):
    """Averaged token embeddings -> ReLU MLP -> float32 logits.

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: number of classes (logits per row).
        max_length: longest sequence the model is given (kept for the common
            classifier interface; the model itself accepts any length).
        embedding_dim: width of the token embeddings.
        hidden_dims: width of each hidden ReLU layer (may be empty: a linear
            classifier on the averaged embeddings).
        dropout: dropout rate after every hidden layer.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        embedding_dim: int = 128,
        hidden_dims: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("vocab_size", vocab_size),
            ("max_length", max_length),
            ("embedding_dim", embedding_dim),
        ):
            check_positive_int(name, value)
        check_num_classes(num_classes)
        check_dropout(dropout)
        hidden_dims = list(hidden_dims)
        for width in hidden_dims:
            check_positive_int("every hidden_dims entry", width)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.max_length = max_length
        self.embedding_dim = embedding_dim
        self.hidden_dims = hidden_dims
        self.dropout = dropout

        self.token_embedding = keras.layers.Embedding(
            vocab_size, embedding_dim, dtype=self.dtype_policy, name="token_embedding"
        )
        # One attribute per layer, not a list: tf.train.Checkpoint does not
        # track Keras 3 layers inside a plain Python list.
        for i, width in enumerate(hidden_dims):
            dense = keras.layers.Dense(
                width, activation="relu", dtype=self.dtype_policy, name=f"hidden_{i}"
            )
            setattr(self, f"hidden_{i}", dense)
        # Dropout has no weights, so one layer serves after every hidden layer.
        self.hidden_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="hidden_dropout"
        )
        # float32 head (Keras' mixed-precision advice for the last layer).
        self.head = keras.layers.Dense(num_classes, dtype="float32", name="head")

    @property
    def hidden_layers(self) -> list[keras.layers.Dense]:
        """The hidden ReLU layers, first to last."""
        return [getattr(self, f"hidden_{i}") for i in range(len(self.hidden_dims))]

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """int `[B, T]` ids (0 = padding) -> float32 logits `[B, C]`."""
        x = masked_mean(self.token_embedding(token_ids), padding_mask(token_ids))
        for dense in self.hidden_layers:
            x = self.hidden_dropout(dense(x), training=training)
        return tf.cast(self.head(x), tf.float32)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "max_length": self.max_length,
                "embedding_dim": self.embedding_dim,
                "hidden_dims": list(self.hidden_dims),
                "dropout": self.dropout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MLPClassifier:
        return cls(**config)
