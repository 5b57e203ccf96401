"""TransformerClassifier: a GPT-shaped transformer encoder with a classification head.

The backbone is GPT's, layer for layer and name for name: token + learned
position embeddings, dropout, `num_layers` pre-LayerNorm
`keras_hub.layers.TransformerDecoder` blocks and a final LayerNorm. Keeping
the same layer classes and attribute names is what lets `load_backbone_from`
copy a pretrained `GPT` into it weight for weight (ULMFiT / GPT-1 style
fine-tuning). On top sit a pooling step, dropout and a `Dense(num_classes)`.

Attention is bidirectional by default (`causal=False`): a classifier sees the
whole sentence at once, so every token may attend to every other real token.
`causal=True` keeps the LM's causal mask, for fine-tuning a causal LM without
changing what each position was trained to see; "last" pooling is then the
natural choice, because only the last real token has seen the whole row.

Padding. Batches are padded (id 0, on the right) to their own longest row, and
the exported SavedModel must give the Keras logits exactly, so a row's logits
must not depend on how many pad tokens follow it. Three things ensure that:
pad positions are masked out as attention keys (`decoder_padding_mask`), the
learned positions of real tokens do not move (padding is on the right), and
every pooling reads only real positions (`token_ids != 0`). Pad positions
still compute garbage hidden states of their own; nothing ever reads them.

The masked-pooling helpers at the top are shared with the CNN and MLP
classifiers (`tfllm.models.cnn`, `tfllm.models.mlp`).
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
import tensorflow as tf

from tfllm.config import POOLINGS
from tfllm.distribute.mesh import assign
from tfllm.models.gpt import add_backbone_layers
from tfllm.models.remat import checkpointed
from tfllm.models.staging import MEGATRON_SPLITS


def check_positive_int(name: str, value: Any) -> None:
    """Raise a ValueError naming `name` unless `value` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_num_classes(num_classes: Any) -> None:
    """A classifier needs at least two classes (two logits for a softmax)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")


def check_dropout(dropout: Any) -> None:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def padding_mask(token_ids: tf.Tensor) -> tf.Tensor:
    """Boolean `[B, T]`: True on real tokens (id 0 is padding)."""
    return tf.not_equal(token_ids, 0)


def masked_mean(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of `x [B, T, D]` over the positions where `mask [B, T]` is True.

    Summed in float32 (a bfloat16 sum over hundreds of tokens loses digits);
    a row with no real token divides by 1 and gives zeros rather than NaN.
    """
    weights = tf.cast(mask, tf.float32)[:, :, None]
    total = tf.reduce_sum(tf.cast(x, tf.float32) * weights, axis=1)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
    return total / count


def freeze_first_blocks(blocks: list[keras.layers.Layer], num_blocks: int) -> None:
    """Make `blocks[:num_blocks]` non-trainable (`freeze_backbone` of every transformer
    classifier); ValueError unless 0 <= num_blocks <= len(blocks)."""
    if isinstance(num_blocks, bool) or not 0 <= num_blocks <= len(blocks):
        raise ValueError(
            f"num_blocks must be in [0, {len(blocks)}] (num_layers), got {num_blocks!r}"
        )
    for block in blocks[:num_blocks]:
        block.trainable = False


@keras.saving.register_keras_serializable(package="tfllm")
class TransformerClassifier(keras.Model):
    """A transformer text classifier whose backbone is weight-compatible with `GPT`.

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: number of classes (logits per row).
        max_length: longest sequence (number of learned positions).
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: width of the residual stream.
        intermediate_dim: width of each block's MLP hidden layer.
        dropout: dropout after the embeddings, inside every block and before the head.
        pooling: "mean" (over real tokens), "cls" (position 0, the bos token) or
            "last" (the last real token).
        causal: keep GPT's causal attention mask instead of bidirectional attention.
        layer_norm_epsilon: epsilon of every LayerNorm.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.1,
        pooling: str = "mean",
        causal: bool = False,
        layer_norm_epsilon: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("vocab_size", vocab_size),
            ("max_length", max_length),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("intermediate_dim", intermediate_dim),
        ):
            check_positive_int(name, value)
        check_num_classes(num_classes)
        check_dropout(dropout)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.max_length = max_length
        self.num_layers = num_layers
        self.remat_blocks = False  # training-time switch: tfllm.models.remat
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.pooling = pooling
        self.causal = bool(causal)
        self.layer_norm_epsilon = layer_norm_epsilon

        # The backbone: GPT's layers under GPT's attribute names.
        add_backbone_layers(self)

        # The head. float32 (the Keras mixed-precision advice for a model's last
        # layer): the pooled features are float32 already, and the logits feed a
        # softmax cross entropy.
        self.head_dropout = keras.layers.Dropout(dropout, dtype="float32", name="head_dropout")
        self.head = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype="float32",
            name="head",
        )

    @property
    def blocks(self) -> list[keras_hub.layers.TransformerDecoder]:
        """The transformer blocks, first to last."""
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def backbone_layers(self) -> list[keras.layers.Layer]:
        """The layers a pretrained LM provides (for freezing, or a lower learning rate)."""
        return [self.token_embedding, self.position_embedding, *self.blocks, self.final_norm]

    def freeze_backbone(self, num_blocks: int, embeddings: bool) -> None:
        """Make the first `num_blocks` blocks (and the embeddings, if asked) non-trainable."""
        freeze_first_blocks(self.blocks, num_blocks)
        if embeddings:
            self.token_embedding.trainable = False
            self.position_embedding.trainable = False

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """int `[B, T]` ids (0 = padding, on the right) -> float32 logits `[B, C]`."""
        mask = padding_mask(token_ids)
        tokens = self.token_embedding(token_ids)
        x = tokens + self.position_embedding(tokens)
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = checkpointed(
                lambda h, b=block: b(
                    h, decoder_padding_mask=mask, use_causal_mask=self.causal, training=training
                ),
                x,
                self.remat_blocks,
            )
        x = self.final_norm(x)
        pooled = self._pool(x, mask)
        pooled = self.head_dropout(pooled, training=training)
        return tf.cast(self.head(pooled), tf.float32)

    def _pool(self, x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """`[B, T, D]` hidden states -> float32 `[B, D]`, reading only real tokens."""
        if self.pooling == "mean":
            return masked_mean(x, mask)
        if self.pooling == "cls":
            return tf.cast(x[:, 0], tf.float32)
        # "last": the last real token (padding is on the right, so index n - 1).
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        last = tf.maximum(lengths - 1, 0)
        return tf.cast(tf.gather(x, last, axis=1, batch_dims=1), tf.float32)

    def load_backbone_from(self, lm: keras.Model) -> None:
        """Copy a built `tfllm.models.gpt.GPT`'s embeddings, blocks and final norm.

        The LM may live on the host while this classifier is split on a
        tensor-parallel mesh: each value is then laid out as the classifier's
        variable is (`tfllm.distribute.mesh.assign`).

        The position embedding takes the LM's first `max_length` rows; the head
        keeps its own initialisation. Raises ValueError when the two
        architectures differ (naming the argument) or the LM has fewer
        positions than this classifier.
        """
        if not lm.built:
            raise ValueError("the LM has no weights yet: build it (call it once) before copying")
        for name in ("vocab_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim"):
            ours, theirs = getattr(self, name), getattr(lm, name)
            if ours != theirs:
                raise ValueError(f"{name} differs: the classifier has {ours}, the LM has {theirs}")
        if self.max_length > lm.max_length:
            raise ValueError(
                f"max_length {self.max_length} exceeds the LM's {lm.max_length} learned positions"
            )
        if not self.built:
            self(tf.zeros([1, self.max_length], tf.int32))
        pairs = [(self.token_embedding, lm.token_embedding)]
        pairs += list(zip(self.blocks, lm.blocks, strict=True))
        pairs.append((self.final_norm, lm.final_norm))
        for ours, theirs in pairs:
            _copy_weights(ours, theirs)
        positions = lm.position_embedding.position_embeddings[: self.max_length]
        assign(self.position_embedding.position_embeddings, positions)

    # The mesh's split rules (tfllm.distribute): the GPT's, on the same layer names;
    # the pooling and the classification head stay replicated.
    tensor_parallel_splits = MEGATRON_SPLITS

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "max_length": self.max_length,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "pooling": self.pooling,
                "causal": self.causal,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TransformerClassifier:
        return cls(**config)


def _copy_weights(target: keras.layers.Layer, source: keras.layers.Layer) -> None:
    """Assign `source`'s variables to `target`'s, matched by position.

    Both layers are the same class built with the same arguments, so their
    `weights` lists line up; checking each pair's shape and path below the
    layer (e.g. `self_attention/query/kernel`) turns a silent mismatch into an
    error.
    """
    ours, theirs = target.weights, source.weights
    if len(ours) != len(theirs):
        raise ValueError(
            f"layer {target.name}: {len(ours)} weights in the classifier, {len(theirs)} in the LM"
        )
    for a, b in zip(ours, theirs, strict=True):
        if tuple(a.shape) != tuple(b.shape) or _below(a, target) != _below(b, source):
            raise ValueError(
                f"layer {target.name}: weight {a.path} {tuple(a.shape)} does not match "
                f"the LM's {b.path} {tuple(b.shape)}"
            )
        assign(a, b.value)  # relaid out when this classifier is tensor parallel


def _below(variable: keras.Variable, layer: keras.layers.Layer) -> str:
    """A variable's path below its layer: `model/block_0/ffn/kernel` -> `ffn/kernel`."""
    marker = f"{layer.name}/"
    index = variable.path.find(marker)
    return variable.path[index + len(marker) :] if index >= 0 else variable.name
