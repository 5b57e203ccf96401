"""LlamaClassifier: a pretrained decoder-only LM (SmolLM2, Llama) read as a text classifier.

What transformers' `LlamaForSequenceClassification` does: run the causal LM's
blocks over the row and classify from the hidden state of its last real token,
the only position that has seen the whole row. The decoder is
`tfllm.models.llama.Llama` itself, held as `self.decoder`, so an imported
workdir copies into it weight for weight (`load_backbone_from`) and LoRA finds
the same query/key/value/attention_output/gate/up/down layers it adapts in
the LM. The head reads the final-RMSNorm'd state, as the LM head does.

Rows are the classifier rows every tfllm classifier uses
(`tfllm.data.classification_data.encode_texts`: `[bos] + pieces`, right-padded
with id 0). Causal attention makes padding harmless by construction: no real
position ever attends to a later one, and positions start at 0 on the left, so
a row's logits do not depend on the padding after it (the exports rely on
that). The last real token is the last non-zero id, so a literal id 0 inside a
row (SmolLM2's `<|endoftext|>` typed into a review) is read as a token, not as
the row's end; `tfllm.training.pretrained_classifier` refuses a tokenizer whose
id 0 is ordinary text (Llama 3's "!"), where a row could end in it.

The LM head of an untied checkpoint stays in the decoder so the checkpoint holds
the whole imported model, but nothing reads it; it is frozen (a trainable
weight without a gradient would only confuse clipping and the optimizer).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfllm.models.classifier import (
    _copy_weights,
    check_dropout,
    check_num_classes,
    check_positive_int,
    freeze_first_blocks,
    masked_mean,
    padding_mask,
)
from tfllm.models.llama import Llama

DECODER_POOLINGS = ("last", "mean")  # a causal model's [bos] state has seen nothing: no "cls"

# Decoder arguments that must equal the source's for its hidden states to be reproduced.
_SAME_AS_SOURCE = (
    "vocab_size", "num_layers", "hidden_dim", "num_heads", "num_kv_heads", "head_dim",
    "intermediate_dim", "rope_theta", "rope_scaling", "norm_epsilon", "tie_embeddings",
)  # fmt: skip


def last_real_index(token_ids: tf.Tensor) -> tf.Tensor:
    """int32 `[B]`: the position of each row's last non-zero id (0 for an all-padding row)."""
    positions = tf.range(1, tf.shape(token_ids)[1] + 1)[None, :]
    ends = tf.reduce_max(positions * tf.cast(padding_mask(token_ids), tf.int32), axis=1)
    return tf.maximum(ends - 1, 0)


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaClassifier(keras.Model):
    """A text classifier on a Llama decoder (fine-tuned from an imported one, fully or LoRA).

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: number of classes (logits per row).
        max_length: longest input row (bos included).
        num_layers, num_heads, hidden_dim, intermediate_dim, num_kv_heads,
        head_dim, rope_theta, rope_scaling, norm_epsilon, tie_embeddings: the
            decoder's shape, as `Llama` takes them.
        dropout: residual dropout in the decoder and dropout before the head.
        pooling: "last" (the last real token's state) or "mean" (over real tokens).
    """

    backbone_family = "llama"  # what `train.init_from` must hold (tfllm.training.tasks)

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        num_kv_heads: int = 0,
        head_dim: int = 0,
        rope_theta: float = 10000.0,
        rope_scaling: tuple[float, float, float, int] = (0.0, 1.0, 4.0, 8192),
        norm_epsilon: float = 1e-5,
        tie_embeddings: bool = True,
        dropout: float = 0.0,
        pooling: str = "last",
        **kwargs: Any,
    ) -> None:
        for name, value in (("vocab_size", vocab_size), ("max_length", max_length)):
            check_positive_int(name, value)
        check_num_classes(num_classes)
        check_dropout(dropout)
        if pooling not in DECODER_POOLINGS:
            raise ValueError(f"pooling must be one of {DECODER_POOLINGS}, got {pooling!r}")
        super().__init__(**kwargs)
        self.decoder = Llama(
            vocab_size=vocab_size,
            max_length=max_length,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            norm_epsilon=norm_epsilon,
            tie_embeddings=tie_embeddings,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="decoder",
        )
        self.vocab_size, self.num_classes, self.max_length = vocab_size, num_classes, max_length
        self.num_layers, self.num_heads, self.hidden_dim = num_layers, num_heads, hidden_dim
        self.intermediate_dim = intermediate_dim
        # The decoder resolves 0 to its default; keep the resolved values (get_config).
        self.num_kv_heads, self.head_dim = self.decoder.num_kv_heads, self.decoder.head_dim
        self.rope_theta, self.rope_scaling = rope_theta, tuple(rope_scaling)
        self.norm_epsilon, self.tie_embeddings = norm_epsilon, tie_embeddings
        self.dropout, self.pooling = dropout, pooling
        # float32 head, as in the other classifiers: the logits feed a softmax cross entropy.
        self.head_dropout = keras.layers.Dropout(dropout, dtype="float32", name="head_dropout")
        self.head = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="head",
        )

    def build(self, input_shape: Any) -> None:
        """Builds the decoder (every weight, an untied LM head's included) and the head."""
        self.decoder(tf.zeros([1, min(8, self.max_length)], tf.int32))
        if not self.tie_embeddings:
            self.decoder.token_embedding.reverse_embeddings.trainable = False  # module docstring
        self.head.build((None, self.hidden_dim))
        self.built = True

    @property
    def blocks(self) -> list[keras.layers.Layer]:
        """The decoder blocks, first to last."""
        return self.decoder.blocks

    def backbone_layers(self) -> list[keras.layers.Layer]:
        """The layers the imported decoder provides (for `train.backbone_lr_scale`, LoRA)."""
        return [self.decoder]

    def freeze_backbone(self, num_blocks: int, embeddings: bool) -> None:
        """Make the first `num_blocks` blocks (and the token embedding, if asked) non-trainable."""
        freeze_first_blocks(self.blocks, num_blocks)
        if embeddings:
            self.decoder.token_embedding.trainable = False

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """int `[B, T]` ids (0 = padding on the right) -> float32 logits `[B, C]`."""
        token_ids = tf.convert_to_tensor(token_ids)
        hidden = self.decoder.final_norm(self.decoder.residual_stream(token_ids, training))
        if self.pooling == "mean":
            pooled = masked_mean(hidden, padding_mask(token_ids))
        else:
            last = last_real_index(token_ids)
            pooled = tf.cast(tf.gather(hidden, last, axis=1, batch_dims=1), tf.float32)
        pooled = self.head_dropout(pooled, training=training)
        return tf.cast(self.head(pooled), tf.float32)

    def load_backbone_from(self, source: Llama) -> None:
        """Copies every weight of a built `Llama` (an imported one) into `self.decoder`.

        Raises ValueError naming the first argument that differs, or a weight
        whose shape or path has no counterpart (no decoder weight is ever left
        random). RoPE has no position table, so `max_length` may be shorter
        than the source's context.
        """
        if not isinstance(source, Llama) or not source.built:
            raise ValueError("the source must be a built Llama (an imported llama workdir)")
        for name in _SAME_AS_SOURCE:
            ours, theirs = getattr(self, name), getattr(source, name)
            if ours != theirs:
                raise ValueError(
                    f"{name} differs: the classifier has {ours!r}, the decoder {theirs!r}"
                )
        if not self.built:
            self(tf.zeros([1, min(8, self.max_length)], tf.int32))
        _copy_weights(self.decoder, source)

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
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=list(self.rope_scaling),
            norm_epsilon=self.norm_epsilon,
            tie_embeddings=self.tie_embeddings,
            dropout=self.dropout,
            pooling=self.pooling,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LlamaClassifier:
        return cls(**config)
