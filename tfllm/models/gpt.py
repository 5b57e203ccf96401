"""GPT: a decoder-only language model built from keras-hub layers.

The model reads top to bottom like nanoGPT: token + learned position
embeddings, dropout, `num_layers` pre-LayerNorm transformer blocks (causal
self-attention and a GELU MLP), a final LayerNorm, and logits from the token
embedding matrix used in reverse (tied input/output embeddings). The blocks are
`keras_hub.layers.TransformerDecoder`s.

KV cache (`init_cache`, `call_with_cache`): a (keys, values) pair per layer,

    cache[i] = (keys, values), each [batch, num_heads, length, head_dim]

The cached path is our own
(`cached_block`), not keras-hub's `CachedMultiHeadAttention` cache argument,
for two measured reasons: keras-hub keeps each layer's cache as
`[B, 2, S, H, Dh]` and in every layer and step slices keys and values out,
updates each and re-stacks them (whole-cache copies: our XLA decode loop ran
about 1.7× slower on it at gpt_small dims, docs/benchmarks.md), and its cache
update is an `XlaDynamicUpdateSlice`, which DTensor cannot lay out, so
tensor-parallel generation could not run. `cached_block` calls the same
sublayers (same weights, same math; tested against `block(x)`), keeps a
heads-major cache whose keys for one head are contiguous for the score
matmul, and writes it once per layer and step: in place (`"slice"`), or with
a one-hot blend whose ops all have DTensor layout rules (`"blend"`, what a
tensor-parallel mesh uses). Keys and values are separate tensors because
XLA copied each out of a stacked `[2, ...]` cache in every step (measured
in the optimized HLO). All have static shapes, so a decode loop carries them
through `tf.while_loop` and XLA; the TFLite export stacks each layer's pair
into its `kv_cache_<i>` signature tensor.

Left-padded batches (`pad`, int32 `[B]`): row b's first `pad[b]` cache slots
hold padding, so its token in slot s sits at position `s - pad[b]` and its
queries never see slots before `pad[b]`. Prompts of different lengths then
share one batch and one scalar cache index, and each row computes what it
would alone (the batched SavedModel and `tfllm-serve` decode this way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import keras_hub
import tensorflow as tf

from tfllm.models import staging
from tfllm.models.remat import checkpointed

CACHE_UPDATES = ("slice", "blend")
# A cache write: "slice", "blend", or fn(cache, update, index) -> cache (a mesh's).
CacheUpdate = str | Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]
KVCache = tuple[tuple[tf.Tensor, tf.Tensor], ...]  # per layer: (keys, values)


def _init(stddev: float) -> keras.initializers.Initializer:
    """GPT-2's N(0, 0.02) initialisation, which keeps early logits small."""
    return keras.initializers.RandomNormal(stddev=stddev)


def _activation(name: str) -> str | Callable[[tf.Tensor], tf.Tensor]:
    """MLP activation: "gelu" is exact (erf) GELU, "gelu_approximate" GPT-2's tanh form."""
    if name == "gelu_approximate":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return name


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
            activation=_activation(getattr(model, "activation", "gelu")),
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


def write_cache(
    cache: tf.Tensor, update: tf.Tensor, index: int | tf.Tensor, mode: CacheUpdate = "slice"
) -> tf.Tensor:
    """Writes `update` [B, H, t, Dh] into `cache` [B, H, S, Dh] at position `index`.

    "slice" is one dynamic-update-slice (in place inside an XLA loop, and
    TFLite's DYNAMIC_UPDATE_SLICE). "blend" places the rows with a one-hot
    [t, S] matmul and blends them in elementwise: it touches the whole cache,
    but every op in it has a DTensor layout rule, so a cache sharded over
    heads stays sharded (DTensor cannot lay out XlaDynamicUpdateSlice). A
    callable `mode` does the write itself.
    """
    if callable(mode):
        return mode(cache, update, index)
    if mode == "slice":
        return keras.ops.slice_update(cache, [0, 0, index, 0], update)
    positions = tf.cast(index, tf.int32) + tf.range(tf.shape(update)[2])
    place = tf.one_hot(positions, cache.shape[2], dtype=cache.dtype)  # [t, S]
    placed = tf.einsum("bhtd,ts->bhsd", update, place)
    keep = 1 - tf.reduce_sum(place, axis=0)[:, tf.newaxis]  # [S, 1]: 0 where written
    return cache * keep + placed


def token_positions(
    index: int | tf.Tensor, length: tf.Tensor | int, pad: tf.Tensor | None = None
) -> tf.Tensor:
    """Positions of the `length` tokens written at cache slots `index…`: `[t]`, or
    `[B, t]` with a left `pad` per row (slots inside the padding get position 0)."""
    slots = tf.cast(index, tf.int32) + tf.range(length)
    if pad is None:
        return slots
    return tf.maximum(slots[tf.newaxis, :] - tf.cast(pad, tf.int32)[:, tf.newaxis], 0)


def visible_slots(
    index: int | tf.Tensor,
    length: tf.Tensor | int,
    cache_length: tf.Tensor | int,
    pad: tf.Tensor | None = None,
) -> tf.Tensor:
    """Which cache slots each of the `length` queries at `index…` attends to.

    Causal: slots up to the query's own. `[t, S]`; with `pad`, `[B, 1, t, S]`
    (broadcast over heads) and slots before a row's `pad` hidden. A padding
    query still sees its own slot, so its softmax never divides by zero: a NaN
    there would reach real rows through `0 * NaN` in the values matmul.
    """
    query = tf.cast(index, tf.int32) + tf.range(length)
    slots = tf.range(cache_length)
    causal = slots[tf.newaxis, :] <= query[:, tf.newaxis]
    if pad is None:
        return causal
    real = slots[tf.newaxis, tf.newaxis, :] >= tf.cast(pad, tf.int32)[:, tf.newaxis, tf.newaxis]
    own = tf.equal(slots[tf.newaxis, :], query[:, tf.newaxis])
    return tf.logical_and(causal, tf.logical_or(real, own))[:, tf.newaxis]


def cached_block(
    block: keras_hub.layers.TransformerDecoder,
    x: tf.Tensor,
    cache: tuple[tf.Tensor, tf.Tensor],
    index: int | tf.Tensor,
    cache_update: CacheUpdate = "slice",
    pad: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """One pre-LayerNorm decoder block on `x` [B, t, d] at cache slots `index…index+t-1`.

    Uses the block's own sublayers, so its weights and math are those of
    `block(x)` (tested against the full forward pass). `cache` is the layer's
    (keys, values); returns `(x, cache)` with the new keys/values written.
    Each position attends to every cached position up to itself (after the
    row's left `pad`, see `visible_slots`).
    """
    attention = block._self_attention_layer
    h = block._self_attention_layer_norm(x)

    # Through the layers themselves: an einsum straight onto a sharded kernel
    # crashed DTensor (segfault, measured), and a fused Q/K/V kernel gained
    # nothing measurable under XLA.
    def heads(dense: keras.layers.EinsumDense) -> tf.Tensor:  # [B, t, H, Dh] -> [B, H, t, Dh]
        return tf.transpose(dense(h), [0, 2, 1, 3])

    query = heads(attention._query_dense)
    keys = write_cache(cache[0], heads(attention._key_dense), index, cache_update)
    values = write_cache(cache[1], heads(attention._value_dense), index, cache_update)

    query = query * tf.cast(attention._key_dim**-0.5, query.dtype)
    scores = tf.einsum("bhtd,bhsd->bhts", query, keys)
    slots = keys.shape[2] if keys.shape[2] is not None else tf.shape(keys)[2]
    visible = visible_slots(index, tf.shape(x)[1], slots, pad)
    # Softmax in float32 (as keras' MHA does under mixed precision); a row always
    # sees its own position, so the -inf entries never make a NaN.
    scores = tf.where(visible, tf.cast(scores, tf.float32), float("-inf"))
    probs = tf.cast(tf.nn.softmax(scores, axis=-1), x.dtype)
    attended = tf.einsum("bhts,bhsd->bthd", probs, values)
    x = x + attention._output_dense(attended)

    h = block._feedforward_layer_norm(x)
    h = block._feedforward_output_dense(block._feedforward_intermediate_dense(h))
    return x + h, (keys, values)


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
        activation: the MLP's activation, "gelu" (exact) or "gelu_approximate"
            (the tanh form GPT-2 checkpoints were trained with).
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
        activation: str = "gelu",
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
        self.remat_blocks = False  # training-time switch: tfllm.models.remat
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.head_dim = hidden_dim // num_heads

        add_backbone_layers(self)

    @property
    def blocks(self) -> list[keras_hub.layers.TransformerDecoder]:
        """The transformer blocks, first to last."""
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def _embed(
        self,
        token_ids: tf.Tensor,
        start_index: int | tf.Tensor,
        training: bool,
        pad: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Token + position embeddings; positions start at `start_index`.

        A tensor `start_index` (cached decoding) looks its positions up with a
        gather: keras-hub's default `slice` makes XLA treat the start as a
        compile-time constant, so the jit-compiled decode loop recompiled for
        every prompt length (~1-2 s each on 2 cores, measured). The rows are
        the same either way, so the logits are bit-identical. With a left `pad`
        per row, positions are per row (`token_positions`).
        """
        tokens = self.token_embedding(token_ids)
        if pad is not None:
            # Clamped: in a batch, a row that has used its budget keeps decoding
            # (its tokens are discarded) past the learned positions.
            index = tf.minimum(
                token_positions(start_index, tf.shape(token_ids)[-1], pad), self.max_length - 1
            )
            positions = self.position_embedding(tokens, positions=index)
        elif isinstance(start_index, int):
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
            x = checkpointed(lambda h, b=block: b(h, training=training), x, self.remat_blocks)
        return self._logits(x)

    def init_cache(self, batch_size: int | tf.Tensor, length: int | None = None) -> KVCache:
        """All-zero KV caches: per layer, keys and values `[B, heads, length, head_dim]`.

        `length` defaults to the whole context; a generator that knows it needs
        only prompt + new tokens passes less, and every decode step then reads
        (and attends over) a proportionally smaller cache.
        """
        length = self.max_length if length is None else length
        shape = [batch_size, self.num_heads, length, self.head_dim]

        def zeros() -> tf.Tensor:
            return tf.zeros(shape, dtype=self.compute_dtype)

        return tuple((zeros(), zeros()) for _ in range(self.num_layers))

    def call_with_cache(
        self,
        token_ids: tf.Tensor,
        cache: KVCache,
        cache_index: int | tf.Tensor,
        cache_update: CacheUpdate = "slice",
        pad: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, KVCache]:
        """Run cache slots `cache_index .. cache_index + t - 1` against the cache.

        Writes the new tokens' keys/values into each layer's cache and lets
        each of them attend causally to every cached position before it.
        Serves both the prefill (`t` = prompt length, `cache_index` = 0) and
        one-token decode steps (`t` = 1). `cache_update` is how the cache is
        written (`write_cache`); `pad` (int32 `[B]`) is each row's left padding
        (module docstring). Returns `(logits [B, t, V] float32, new_cache)`.
        """
        if not callable(cache_update) and cache_update not in CACHE_UPDATES:
            raise ValueError(f"cache_update must be one of {CACHE_UPDATES}, got {cache_update!r}")
        x = self._embed(token_ids, cache_index, training=False, pad=pad)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, layer_cache = cached_block(block, x, layer_cache, cache_index, cache_update, pad)
            new_cache.append(layer_cache)
        return self._logits(x), tuple(new_cache)

    # ------------------------------------------- how it splits over devices
    # (read by tfllm.distribute: the mesh's split rules, the pipeline's stages)
    tensor_parallel_splits = staging.MEGATRON_SPLITS

    def pipeline_stage(self, path: str, block_stage: Sequence[int]) -> int | None:
        return staging.pipeline_stage(path, block_stage)

    def staged_per_example_loss(self, task, inputs, targets, **stages: Any) -> tf.Tensor:
        return staging.staged_per_example_loss(self, task, inputs, targets, **stages)

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
                "activation": self.activation,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT:
        return cls(**config)
