"""GPT: a decoder-only language model built from keras-hub layers.

The model reads top to bottom like nanoGPT: token + learned position
embeddings, dropout, `num_layers` pre-LayerNorm transformer blocks (causal
self-attention and a GELU MLP), a final LayerNorm, and logits from the token
embedding matrix used in reverse (tied input/output embeddings). The blocks are
`keras_hub.layers.TransformerDecoder`s, whose self-attention cache arguments
give KV-cache decoding without a home-made attention layer.

KV cache layout (`init_cache`, `call_with_cache`)::

    cache: [batch, num_layers, 2, max_length, num_heads, head_dim]

axis 2 holds keys (0) and values (1). One layer's slice `cache[:, i]` is the
`[batch, 2, max_length, num_heads, head_dim]` tensor keras-hub's
`CachedMultiHeadAttention` reads and updates, so the layout follows it (it is
also what `keras_hub.models.GPT2CausalLM` uses). The cache has a static shape
so a decode loop can carry it through `tf.while_loop` and XLA.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
import tensorflow as tf


def _init(stddev: float) -> keras.initializers.Initializer:
    """GPT-2's N(0, 0.02) initialisation, which keeps early logits small."""
    return keras.initializers.RandomNormal(stddev=stddev)


def add_backbone_layers(model: keras.Model) -> None:
    """Creates the GPT backbone's layers as attributes of `model`.

    `GPT` and `tfllm.models.classifier.TransformerClassifier` both call this, so
    their backbones have the same layer classes and names and a pretrained
    LM's weights copy into a classifier one to one. Reads the shape from the
    model's attributes (vocab_size, max_length, num_layers, num_heads,
    hidden_dim, intermediate_dim, dropout, layer_norm_epsilon).
    """
    policy = model.dtype_policy
    model.token_embedding = keras_hub.layers.ReversibleEmbedding(
        input_dim=model.vocab_size,
        output_dim=model.hidden_dim,
        embeddings_initializer=_init(0.02),
        dtype=policy,
        name="token_embedding",
    )
    model.position_embedding = keras_hub.layers.PositionEmbedding(
        sequence_length=model.max_length,
        initializer=_init(0.02),
        dtype=policy,
        name="position_embedding",
    )
    model.embedding_dropout = keras.layers.Dropout(
        model.dropout, dtype=policy, name="embedding_dropout"
    )
    # Each block is its own attribute: `tf.train.Checkpoint` tracks Keras 3
    # layers held in attributes, but not those inside a plain Python list
    # (measured: a list of blocks was silently left out of checkpoints).
    for i in range(model.num_layers):
        block = keras_hub.layers.TransformerDecoder(
            intermediate_dim=model.intermediate_dim,
            num_heads=model.num_heads,
            dropout=model.dropout,
            activation="gelu",
            layer_norm_epsilon=model.layer_norm_epsilon,
            kernel_initializer=_init(0.02),
            normalize_first=True,
            dtype=policy,
            name=f"block_{i}",
        )
        setattr(model, f"block_{i}", block)
    model.final_norm = keras.layers.LayerNormalization(
        epsilon=model.layer_norm_epsilon, dtype=policy, name="final_norm"
    )


@keras.saving.register_keras_serializable(package="tfllm")
class GPT(keras.Model):
    """A GPT-2-style causal language model returning float32 logits.

    Args:
        vocab_size: number of token ids.
        max_length: longest sequence (number of learned positions, cache size).
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of the MLP's hidden layer.
        dropout: dropout rate after the embeddings and inside every block.
        layer_norm_epsilon: epsilon of every LayerNorm.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})"
            )
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.head_dim = hidden_dim // num_heads

        add_backbone_layers(self)

    @property
    def blocks(self) -> list[keras_hub.layers.TransformerDecoder]:
        """The transformer blocks, first to last."""
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def _embed(
        self, token_ids: tf.Tensor, start_index: int | tf.Tensor, training: bool
    ) -> tf.Tensor:
        """Token + position embeddings; positions start at `start_index`.

        A tensor `start_index` (cached decoding) looks its positions up with a
        gather: keras-hub's default `slice` makes XLA treat the start as a
        compile-time constant, so the jit-compiled decode loop recompiled for
        every prompt length (~1-2 s each on 2 cores, measured). The rows are
        the same either way, so the logits are bit-identical.
        """
        tokens = self.token_embedding(token_ids)
        if isinstance(start_index, int):
            positions = self.position_embedding(tokens, start_index=start_index)
        else:
            index = tf.cast(start_index, tf.int32) + tf.range(tf.shape(token_ids)[-1])
            positions = self.position_embedding(tokens, positions=index)
        return self.embedding_dropout(tokens + positions, training=training)

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        """Final LayerNorm, then the tied head; float32 so losses and samplers
        stay stable under a mixed-precision policy."""
        x = self.final_norm(x)
        return tf.cast(self.token_embedding(x, reverse=True), tf.float32)

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Full causal forward pass: int `[B, T]` ids -> float32 `[B, T, V]`."""
        x = self._embed(token_ids, 0, training)
        for block in self.blocks:
            x = block(x, training=training)
        return self._logits(x)

    def init_cache(self, batch_size: int | tf.Tensor, length: int | None = None) -> tf.Tensor:
        """An all-zero KV cache `[B, num_layers, 2, length, heads, head_dim]`.

        `length` defaults to the whole context; a generator that knows it needs
        only prompt + new tokens passes less, and every decode step then reads
        (and attends over) a proportionally smaller cache.
        """
        length = self.max_length if length is None else length
        shape = [
            batch_size,
            self.num_layers,
            2,
            length,
            self.num_heads,
            self.head_dim,
        ]
        return tf.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(
        self,
        token_ids: tf.Tensor,
        cache: tf.Tensor,
        cache_index: int | tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Run positions `cache_index .. cache_index + t - 1` against the cache.

        Writes the new tokens' keys/values into the cache and lets each of them
        attend causally to every cached position before it. Serves both the
        prefill (`t` = prompt length, `cache_index` = 0) and one-token decode
        steps (`t` = 1). Returns `(logits [B, t, V] float32, new_cache)`.
        """
        layer_caches = [cache[:, i, ...] for i in range(self.num_layers)]
        logits, layer_caches = self.call_with_layer_caches(token_ids, layer_caches, cache_index)
        return logits, tf.stack(layer_caches, axis=1)

    def call_with_layer_caches(
        self,
        token_ids: tf.Tensor,
        layer_caches: list[tf.Tensor],
        cache_index: int | tf.Tensor,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """`call_with_cache` with one `[B, 2, length, heads, head_dim]` cache per layer.

        The TFLite export uses this form: it never builds the 6-D stacked
        cache, which TFLite's STRIDED_SLICE (≤ 5-D) cannot slice, and each
        layer's cache is updated in place instead of being re-packed per step.
        """
        x = self._embed(token_ids, cache_index, training=False)
        new_caches = []
        for block, layer_cache in zip(self.blocks, layer_caches, strict=True):
            x, layer_cache = block(
                x,
                self_attention_cache=layer_cache,
                self_attention_cache_update_index=cache_index,
                training=False,
            )
            new_caches.append(layer_cache)
        return self._logits(x), new_caches

    def num_params(self, include_position_embedding: bool = True) -> int:
        """Parameter count; the token embedding counts once (it is tied)."""
        total = self.count_params()
        if not include_position_embedding:
            total -= self.position_embedding.count_params()
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, 6N + 12·L·d·T (nanoGPT / PaLM appendix B).

        N counts every parameter except the learned position embedding (a
        lookup, no matmul); the tied token embedding stays in N because it is
        also the LM head's matmul. 12·L·d·T is the attention-score work.
        """
        n = self.num_params(include_position_embedding=False)
        return 6 * n + 12 * self.num_layers * self.hidden_dim * seq_len

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "max_length": self.max_length,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT:
        return cls(**config)
