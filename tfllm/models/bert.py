"""BERT: a post-LayerNorm transformer encoder, for embeddings and classification.

The model reads top to bottom like Hugging Face's `BertModel`: word +
position + token-type embeddings, LayerNorm, dropout, then `num_layers`
blocks (self-attention, dropout, add, LayerNorm; dense + activation, dense,
dropout, add, LayerNorm), and an optional pooler (dense + tanh on [CLS]).
The blocks are `keras_hub.layers.TransformerEncoder(normalize_first=False)`.

Why not keras-hub's `BertBackbone` as it is: it hard-codes the tanh
approximation of GELU, while BERT checkpoints (`hidden_act: "gelu"`) were
trained with the exact, erf-based GELU; on all-MiniLM-L6-v2 that moved the
hidden states by 2.6e-3 (tests/pretrained/test_bert.py shows the tanh
version failing the import tolerance). Here `activation` is what the
checkpoint says: "gelu" (exact), "gelu_approximate" (tanh) or "relu".

Padding: `padding_mask` defaults to `token_ids != 0`, the [PAD] id of every
BERT vocabulary. Hugging Face uses the tokenizer's attention mask instead;
`WordPieceTokenizer.encode_for_model` returns that mask, pass it when a
vocabulary pads with another id.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
import tensorflow as tf

from tfllm.models.remat import checkpointed

ACTIVATIONS = ("gelu", "gelu_approximate", "relu")
PAD_ID = 0


@keras.saving.register_keras_serializable(package="tfllm")
def gelu_approximate(x: tf.Tensor) -> tf.Tensor:
    """GELU's tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh")."""
    return keras.activations.gelu(x, approximate=True)


def _activation(name: str) -> Any:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return gelu_approximate if name == "gelu_approximate" else name  # keras' "gelu" is exact


@keras.saving.register_keras_serializable(package="tfllm")
class BertEncoder(keras.Model):
    """A BERT encoder returning float32 hidden states [batch, length, hidden_dim].

    Args:
        vocab_size: number of token ids.
        max_length: number of learned positions (HF `max_position_embeddings`).
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: width of the hidden states.
        intermediate_dim: width of each block's feed-forward layer.
        type_vocab_size: number of segment (token type) ids.
        layer_norm_epsilon: epsilon of every LayerNorm.
        activation: "gelu" (exact), "gelu_approximate" (tanh) or "relu".
        dropout: dropout rate on embeddings, attention and residual branches.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        type_vocab_size: int = 2,
        layer_norm_epsilon: float = 1e-12,
        activation: str = "gelu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})"
            )
        block_activation = _activation(activation)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.num_layers = num_layers
        self.remat_blocks = False  # training-time switch: tfllm.models.remat
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.type_vocab_size = type_vocab_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.dropout = dropout

        policy = self.dtype_policy
        init = keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initializer_range
        self.token_embedding = keras.layers.Embedding(
            vocab_size, hidden_dim, embeddings_initializer=init, dtype=policy,
            name="token_embedding",
        )  # fmt: skip
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=max_length, initializer=init, dtype=policy, name="position_embedding"
        )
        self.segment_embedding = keras.layers.Embedding(
            type_vocab_size, hidden_dim, embeddings_initializer=init, dtype=policy,
            name="segment_embedding",
        )  # fmt: skip
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="embedding_norm"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, dtype=policy, name="embedding_dropout"
        )
        # One attribute per block: tf.train.Checkpoint does not track Keras 3
        # layers inside a plain list (see tfllm.models.gpt).
        for i in range(num_layers):
            block = keras_hub.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation=block_activation,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=init,
                normalize_first=False,
                dtype=policy,
                name=f"block_{i}",
            )
            setattr(self, f"block_{i}", block)
        self.pooler = keras.layers.Dense(
            hidden_dim, activation="tanh", kernel_initializer=init, dtype=policy, name="pooler"
        )

    @property
    def blocks(self) -> list[keras_hub.layers.TransformerEncoder]:
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def build(self, input_shape: Any) -> None:
        """Creates every weight from the [B, T] ids shape, the pooler's included
        (`call` does not use it), so imports, checkpoints and `.keras` files see them all."""
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build(input_shape)
        self.position_embedding.build(hidden_shape)
        self.segment_embedding.build(input_shape)
        self.embedding_norm.build(hidden_shape)
        for block in self.blocks:
            block.build(hidden_shape)
        self.pooler.build((None, self.hidden_dim))
        self.built = True

    def call(
        self,
        token_ids: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        segment_ids: tf.Tensor | None = None,
        training: bool = False,
    ) -> tf.Tensor:
        """Hidden states [B, T, hidden_dim] (float32) of int token ids [B, T].

        `padding_mask` (True on real tokens) defaults to `token_ids != 0`;
        `segment_ids` default to 0 (one segment).
        """
        token_ids = tf.convert_to_tensor(token_ids)
        if padding_mask is None:
            padding_mask = tf.not_equal(token_ids, PAD_ID)
        if segment_ids is None:
            segment_ids = tf.zeros_like(token_ids)
        x = self.token_embedding(token_ids)
        x = x + self.position_embedding(x) + self.segment_embedding(segment_ids)
        x = self.embedding_dropout(self.embedding_norm(x), training=training)
        padding_mask = tf.cast(padding_mask, "bool")
        for block in self.blocks:
            x = checkpointed(
                lambda h, b=block: b(h, padding_mask=padding_mask, training=training),
                x,
                self.remat_blocks,
            )
        return tf.cast(x, tf.float32)

    def pooled_output(
        self,
        token_ids: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        segment_ids: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """BERT's pooled output [B, hidden_dim]: dense + tanh on the [CLS] position."""
        hidden = self(token_ids, padding_mask=padding_mask, segment_ids=segment_ids)
        return tf.cast(self.pooler(tf.cast(hidden[:, 0], self.compute_dtype)), tf.float32)

    def sentence_embedding(
        self,
        token_ids: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        normalize: bool = False,
    ) -> tf.Tensor:
        """Mean of the hidden states over real tokens [B, hidden_dim] (float32).

        What sentence-transformers' mean pooling does (all-MiniLM-L6-v2);
        `normalize` L2-normalizes each row, as its `Normalize` module does.
        """
        token_ids = tf.convert_to_tensor(token_ids)
        if padding_mask is None:
            padding_mask = tf.not_equal(token_ids, PAD_ID)
        hidden = self(token_ids, padding_mask=padding_mask)
        weights = tf.cast(padding_mask, tf.float32)[:, :, tf.newaxis]
        total = tf.reduce_sum(hidden * weights, axis=1)
        # sentence-transformers clamps the count at 1e-9: an all-padding row gives zeros.
        pooled = total / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
        if normalize:
            pooled = tf.math.l2_normalize(pooled, axis=-1, epsilon=1e-24)
        return pooled

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            max_length=self.max_length,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            type_vocab_size=self.type_vocab_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
            dropout=self.dropout,
        )
        return config
