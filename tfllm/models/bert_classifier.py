"""BertClassifier: a `BertEncoder` with a pooling step, dropout and `Dense(num_classes)`.

Why a classifier on the BERT encoder rather than the GPT-shaped
`TransformerClassifier`: published encoders (all-MiniLM-L6-v2, BERT,
DistilBERT-style checkpoints) are post-LayerNorm BERTs with segment
embeddings and exact GELU, and the only way to keep what they learned is to
run them as they were trained. So the backbone is `tfllm.models.bert.BertEncoder`
itself, held as `self.encoder`, and `load_backbone_from` copies an imported
encoder into it weight for weight (every weight, or a ValueError naming it).

Inputs are the rows `tfllm.data.classification_data.encode_texts` builds from a
WordPiece tokenizer: `[CLS] pieces [SEP]`, right-padded with id 0 ([PAD] in
every BERT vocabulary). Pad positions are masked as attention keys and never
pooled, and positions of real tokens do not move, so a row's logits do not
depend on how much padding follows it (the SavedModel and TFLite exports rely
on that). Pooling: "cls" (the [CLS] state, what BERT's classifiers read),
"mean" over real tokens (what sentence-transformers trained MiniLM with) or
"last" (the [SEP] state).

BERT's pooler (dense + tanh on [CLS]) stays in the encoder so a checkpoint
holds the whole imported model, but the head does not read it and it is kept
frozen: a trainable weight without a gradient would only confuse clipping and
the optimizer.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfllm.config import POOLINGS
from tfllm.distribute.mesh import assign
from tfllm.models.bert import BertEncoder
from tfllm.models.classifier import (
    _copy_weights,
    check_dropout,
    check_num_classes,
    check_positive_int,
    freeze_first_blocks,
    masked_mean,
    padding_mask,
)

# Encoder arguments that must equal the source's for its hidden states to be reproduced.
_SAME_AS_SOURCE = (
    "vocab_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
    "type_vocab_size", "activation", "layer_norm_epsilon",
)  # fmt: skip


@keras.saving.register_keras_serializable(package="tfllm")
class BertClassifier(keras.Model):
    """A text classifier on a BERT encoder (fine-tuned whole from an imported one).

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: number of classes (logits per row).
        max_length: longest input row, [CLS] and [SEP] included; the encoder
            keeps this many learned positions.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: width of the hidden states.
        intermediate_dim: width of each block's feed-forward layer.
        type_vocab_size: number of segment ids (all inputs use segment 0).
        layer_norm_epsilon: epsilon of every LayerNorm.
        activation: "gelu" (exact), "gelu_approximate" (tanh) or "relu".
        dropout: dropout inside the encoder and before the head.
        pooling: "cls", "mean" (over real tokens) or "last" (the [SEP] state).
    """

    backbone_family = "bert"  # what `train.init_from` must hold (tfllm.training.tasks)

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        type_vocab_size: int = 2,
        layer_norm_epsilon: float = 1e-12,
        activation: str = "gelu",
        dropout: float = 0.1,
        pooling: str = "cls",
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("vocab_size", vocab_size),
            ("max_length", max_length),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("intermediate_dim", intermediate_dim),
            ("type_vocab_size", type_vocab_size),
        ):
            check_positive_int(name, value)
        check_num_classes(num_classes)
        check_dropout(dropout)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.max_length = max_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.type_vocab_size = type_vocab_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.dropout = dropout
        self.pooling = pooling

        self.encoder = BertEncoder(
            vocab_size=vocab_size,
            max_length=max_length,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            type_vocab_size=type_vocab_size,
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            dropout=dropout,
            name="encoder",
        )
        self.encoder.pooler.trainable = False  # not read by the head (module docstring)
        # float32 head, as in TransformerClassifier: the logits feed a softmax cross entropy.
        self.head_dropout = keras.layers.Dropout(dropout, dtype="float32", name="head_dropout")
        self.head = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="head",
        )

    def build(self, input_shape: Any) -> None:
        """Builds the encoder (every weight, the pooler's included) and the head."""
        self.encoder.build(input_shape)
        self.head.build((None, self.hidden_dim))
        self.built = True

    @property
    def blocks(self) -> list[keras.layers.Layer]:
        """The encoder blocks, first to last."""
        return self.encoder.blocks

    def backbone_layers(self) -> list[keras.layers.Layer]:
        """The layers the imported encoder provides (for `train.backbone_lr_scale`)."""
        return [self.encoder]

    def freeze_backbone(self, num_blocks: int, embeddings: bool) -> None:
        """Make the first `num_blocks` blocks (and the embeddings, if asked) non-trainable."""
        freeze_first_blocks(self.blocks, num_blocks)
        if embeddings:
            encoder = self.encoder
            for layer in (
                encoder.token_embedding,
                encoder.position_embedding,
                encoder.segment_embedding,
                encoder.embedding_norm,
            ):
                layer.trainable = False

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """int `[B, T]` ids ([CLS] first, 0 = padding on the right) -> float32 logits `[B, C]`."""
        token_ids = tf.convert_to_tensor(token_ids)
        mask = padding_mask(token_ids)
        hidden = self.encoder(token_ids, padding_mask=mask, training=training)
        pooled = self._pool(hidden, mask)
        pooled = self.head_dropout(pooled, training=training)
        return tf.cast(self.head(pooled), tf.float32)

    def _pool(self, x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """`[B, T, D]` hidden states -> float32 `[B, D]`, reading only real tokens."""
        if self.pooling == "mean":
            return masked_mean(x, mask)
        if self.pooling == "cls":
            return tf.cast(x[:, 0], tf.float32)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # "last": right padding
        return tf.cast(tf.gather(x, tf.maximum(lengths - 1, 0), axis=1, batch_dims=1), tf.float32)

    def load_backbone_from(self, encoder: BertEncoder) -> None:
        """Copies every weight of a built `BertEncoder` (an imported one) into `self.encoder`.

        The position table takes the source's first `max_length` rows; the head
        keeps its own initialisation. Raises ValueError naming the first
        argument that differs, a source with fewer positions, or a weight that
        found no counterpart (so no backbone weight is ever left random).
        """
        if not isinstance(encoder, BertEncoder) or not encoder.built:
            raise ValueError("the source must be a built BertEncoder (an imported bert workdir)")
        for name in _SAME_AS_SOURCE:
            ours, theirs = getattr(self, name), getattr(encoder, name)
            if ours != theirs:
                raise ValueError(
                    f"{name} differs: the classifier has {ours!r}, the encoder {theirs!r}"
                )
        if self.max_length > encoder.max_length:
            raise ValueError(
                f"max_length {self.max_length} exceeds the encoder's {encoder.max_length} "
                "learned positions"
            )
        if not self.built:
            self(tf.zeros([1, self.max_length], tf.int32))
        ours = self.encoder
        pairs = [
            (ours.token_embedding, encoder.token_embedding),
            (ours.segment_embedding, encoder.segment_embedding),
            (ours.embedding_norm, encoder.embedding_norm),
            *zip(ours.blocks, encoder.blocks, strict=True),
            (ours.pooler, encoder.pooler),
        ]
        copied = 1  # the position table, below
        for target, source in pairs:
            _copy_weights(target, source)
            copied += len(source.weights)
        if copied != len(encoder.weights):
            raise ValueError(f"copied {copied} of the encoder's {len(encoder.weights)} weights")
        positions = encoder.position_embedding.position_embeddings[: self.max_length]
        assign(ours.position_embedding.position_embeddings, positions)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            num_classes=self.num_classes,
            max_length=self.max_length,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            type_vocab_size=self.type_vocab_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
            dropout=self.dropout,
            pooling=self.pooling,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BertClassifier:
        return cls(**config)
