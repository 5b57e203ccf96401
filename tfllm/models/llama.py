"""Llama: the decoder-only LM of Llama 2/3, SmolLM, TinyLlama and their kin.

Read top to bottom, as nanoGPT's file: token embedding (no learned
positions), `num_layers` pre-RMSNorm blocks — rotary-position self-attention
with grouped-query heads (`num_kv_heads` key/value heads shared by
`num_heads // num_kv_heads` query heads each) and a SwiGLU MLP — a final
RMSNorm, and logits from the embedding matrix used in reverse (tied, as in
SmolLM2) or from a separate head (Llama 3.1 8B).

It is our own model, not keras-hub's `Llama3Backbone`, for the reasons
`tfllm.models.gpt` gives for its own cache path, which apply here in full:
keras-hub's Llama keeps the cache as one `[B, 2, S, H, Dh]` tensor per layer
that the decode step slices and re-stacks, and it has no grouped-query cache
(it repeats the key/value heads before caching them, 3× the cache for
SmolLM2); and our generator, exporters and distribution code all speak
`init_cache` / `call_with_cache`. keras-hub layers are used where they fit
(`ReversibleEmbedding`). The cache is `[B, num_kv_heads, S, head_dim]` per
layer and is written by `tfllm.models.gpt.write_cache`, so the XLA decode
loop, the TFLite prefill/decode export and the blend write a mesh needs are
the GPT's.

Numerics follow Hugging Face transformers' `LlamaForCausalLM` (the reference
its tests compare against): RoPE rotates halves `(i, i + head_dim/2)` with
float32 angles, RMSNorm and softmax run in float32.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm.models.gpt import (
    CACHE_UPDATES,
    CacheUpdate,
    KVCache,
    token_positions,
    visible_slots,
    write_cache,
)
from tfllm.models.remat import checkpointed


def rope_inverse_frequencies(
    head_dim: int,
    theta: float,
    scaling_factor: float = 0.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_length: int = 8192,
) -> np.ndarray:
    """RoPE's per-pair frequencies, with Llama 3.1's long-context scaling when `scaling_factor` > 0.

    Llama 3.1/3.2 ("rope_type": "llama3") divide the low frequencies by the
    factor and blend the band between; a factor of 0 means plain RoPE.
    """
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    if scaling_factor <= 0:
        return inv.astype(np.float32)
    low_wavelen = original_max_length / low_freq_factor
    high_wavelen = original_max_length / high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / scaling_factor, inv)
    smooth = (original_max_length / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling_factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, blended, scaled).astype(np.float32)


def rotary_angles(
    inverse_frequencies: np.ndarray,
    start_index: int | tf.Tensor,
    length: tf.Tensor,
    pad: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """cos/sin of positions `start_index … start_index + length - 1`, float32:
    `[t, head_dim]`, or `[B, t, head_dim]` with a left `pad` per row."""
    positions = tf.cast(token_positions(start_index, length, pad), tf.float32)
    angles = positions[..., tf.newaxis] * tf.constant(inverse_frequencies)
    angles = tf.concat([angles, angles], axis=-1)
    return tf.cos(angles), tf.sin(angles)


def apply_rope(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor) -> tf.Tensor:
    """Rotates `x` [B, t, heads, Dh] by its positions' angles (`cos`/`sin` [t or B×t, Dh])."""
    half = x.shape[-1] // 2
    x32 = tf.cast(x, tf.float32)
    rotated = tf.concat([-x32[..., half:], x32[..., :half]], axis=-1)
    cos, sin = cos[..., tf.newaxis, :], sin[..., tf.newaxis, :]
    return tf.cast(x32 * cos + rotated * sin, x.dtype)


@keras.saving.register_keras_serializable(package="tfllm")
class LlamaBlock(keras.layers.Layer):
    """One pre-RMSNorm block: grouped-query rotary attention, then a SwiGLU MLP."""

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        intermediate_dim: int,
        norm_epsilon: float,
        dropout: float = 0.0,
        inverse_frequencies: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # RoPE's frequencies (`rope_inverse_frequencies`; plain RoPE, θ = 10,000, when
        # None). The angles are computed here from integer positions, in float32:
        # float arguments of a Keras layer call are cast to its compute dtype, and
        # bfloat16 angles would rotate by the wrong amount.
        if inverse_frequencies is None:
            inverse_frequencies = rope_inverse_frequencies(head_dim, 10000.0)
        self.inverse_frequencies = np.asarray(inverse_frequencies, np.float32)
        self.hidden_dim, self.num_heads, self.num_kv_heads = hidden_dim, num_heads, num_kv_heads
        self.head_dim, self.intermediate_dim = head_dim, intermediate_dim
        self.norm_epsilon, self.dropout = norm_epsilon, dropout
        policy = self.dtype_policy

        def dense(equation: str, shape: list, name: str) -> keras.layers.EinsumDense:
            return keras.layers.EinsumDense(equation, shape, dtype=policy, name=name)

        self.attention_norm = keras.layers.RMSNormalization(
            epsilon=norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.query = dense("btd,dhk->bthk", [None, num_heads, head_dim], "query")
        self.key = dense("btd,dhk->bthk", [None, num_kv_heads, head_dim], "key")
        self.value = dense("btd,dhk->bthk", [None, num_kv_heads, head_dim], "value")
        self.attention_output = dense("bthk,hkd->btd", [None, hidden_dim], "attention_output")
        self.mlp_norm = keras.layers.RMSNormalization(
            epsilon=norm_epsilon, dtype=policy, name="mlp_norm"
        )
        self.gate = dense("btd,df->btf", [None, intermediate_dim], "gate")
        self.up = dense("btd,df->btf", [None, intermediate_dim], "up")
        self.down = dense("btf,fd->btd", [None, hidden_dim], "down")
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape: Any) -> None:
        d, f = self.hidden_dim, self.intermediate_dim
        self.attention_norm.build([None, None, d])
        for layer in (self.query, self.key, self.value):
            layer.build([None, None, d])
        self.attention_output.build([None, None, self.num_heads, self.head_dim])
        self.mlp_norm.build([None, None, d])
        self.gate.build([None, None, d])
        self.up.build([None, None, d])
        self.down.build([None, None, f])
        self.built = True

    def attend(
        self,
        x: tf.Tensor,
        cache: tuple[tf.Tensor, tf.Tensor] | None,
        index: int | tf.Tensor,
        cache_update: CacheUpdate = "slice",
        pad: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor] | None]:
        """Causal attention of `x`'s slots (`index…`) over the cache (or over `x` alone).

        Query head `h` reads key/value head `h // (num_heads // num_kv_heads)`,
        as transformers' `repeat_kv` lays them out. `pad`: each row's left
        padding (`tfllm.models.gpt.visible_slots`).
        """
        h = self.attention_norm(x)
        cos, sin = rotary_angles(self.inverse_frequencies, index, tf.shape(x)[1], pad)
        query = tf.transpose(apply_rope(self.query(h), cos, sin), [0, 2, 1, 3])  # [B, H, t, Dh]
        keys = tf.transpose(apply_rope(self.key(h), cos, sin), [0, 2, 1, 3])  # [B, Hkv, t, Dh]
        values = tf.transpose(self.value(h), [0, 2, 1, 3])
        if cache is not None:
            keys = write_cache(cache[0], keys, index, cache_update)
            values = write_cache(cache[1], values, index, cache_update)
            cache = (keys, values)
        batch, t = tf.shape(x)[0], tf.shape(x)[1]
        groups = self.num_heads // self.num_kv_heads
        query = tf.reshape(query, [batch, self.num_kv_heads, groups, t, self.head_dim])
        query = query * tf.cast(self.head_dim**-0.5, query.dtype)
        scores = tf.cast(tf.einsum("bkgtd,bksd->bkgts", query, keys), tf.float32)
        visible = visible_slots(index, t, tf.shape(keys)[2], pad)
        if pad is not None:
            visible = visible[:, tf.newaxis]  # [B, 1, 1, t, S] against [B, Hkv, G, t, S]
        # A row always sees its own position, so the -inf entries never make a NaN.
        scores = tf.where(visible, scores, float("-inf"))
        probs = tf.cast(tf.nn.softmax(scores, axis=-1), values.dtype)
        attended = tf.einsum("bkgts,bksd->btkgd", probs, values)
        attended = tf.reshape(attended, [batch, t, self.num_heads, self.head_dim])
        return self.attention_output(attended), cache

    def feed_forward(self, x: tf.Tensor) -> tf.Tensor:
        """SwiGLU: down(silu(gate(x)) * up(x)) on the RMS-normalised stream."""
        h = self.mlp_norm(x)
        return self.down(keras.ops.silu(self.gate(h)) * self.up(h))

    def call(
        self,
        x: tf.Tensor,
        cache: tuple[tf.Tensor, tf.Tensor] | None = None,
        index: int | tf.Tensor = 0,
        cache_update: CacheUpdate = "slice",
        training: bool = False,
        pad: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor] | None]:
        attended, cache = self.attend(x, cache, index, cache_update, pad)
        x = x + self.residual_dropout(attended, training=training)
        x = x + self.residual_dropout(self.feed_forward(x), training=training)
        return x, cache

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            intermediate_dim=self.intermediate_dim,
            norm_epsilon=self.norm_epsilon,
            dropout=self.dropout,
            inverse_frequencies=self.inverse_frequencies.tolist(),
        )
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class Llama(keras.Model):
    """A Llama-architecture causal LM returning float32 logits.

    Args:
        vocab_size: number of token ids.
        max_length: the context length (RoPE needs no table, so this only bounds caches).
        num_layers, num_heads, hidden_dim, intermediate_dim: the transformer's shape.
        num_kv_heads: key/value heads (grouped-query attention); must divide `num_heads`.
        head_dim: width of one head (0: `hidden_dim // num_heads`).
        rope_theta: RoPE base.
        rope_scaling: Llama 3.1's scaling as (factor, low_freq_factor,
            high_freq_factor, original_max_length); factor 0 for none.
        norm_epsilon: epsilon of every RMSNorm (transformers' `rms_norm_eps`).
        tie_embeddings: logits from the input embedding (True) or a separate head.
        dropout: residual dropout while training (published Llamas use 0).
    """

    def __init__(
        self,
        vocab_size: int,
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
        **kwargs: Any,
    ) -> None:
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
            )
        head_dim = head_dim or hidden_dim // num_heads
        if head_dim % 2:
            raise ValueError(f"head_dim ({head_dim}) must be even for rotary embeddings")
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.num_layers = vocab_size, max_length, num_layers
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.hidden_dim, self.intermediate_dim = hidden_dim, intermediate_dim
        self.rope_theta, self.rope_scaling = rope_theta, tuple(rope_scaling)
        self.norm_epsilon, self.tie_embeddings, self.dropout = norm_epsilon, tie_embeddings, dropout
        self.inverse_frequencies = rope_inverse_frequencies(head_dim, rope_theta, *rope_scaling)
        self.remat_blocks = False  # training-time switch: tfllm.models.remat

        policy = self.dtype_policy
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocab_size,
            hidden_dim,
            tie_weights=tie_embeddings,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=policy,
            name="token_embedding",
        )
        # One attribute per block: tf.train.Checkpoint tracks Keras 3 layers held
        # in attributes, not in a plain list (see tfllm.models.gpt).
        for i in range(num_layers):
            block = LlamaBlock(
                hidden_dim, num_heads, num_kv_heads, head_dim, intermediate_dim,
                norm_epsilon, dropout, self.inverse_frequencies, dtype=policy, name=f"block_{i}",
            )  # fmt: skip
            setattr(self, f"block_{i}", block)
        self.final_norm = keras.layers.RMSNormalization(
            epsilon=norm_epsilon, dtype=policy, name="final_norm"
        )

    @property
    def blocks(self) -> list[LlamaBlock]:
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.token_embedding(self.final_norm(x), reverse=True), tf.float32)

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Full causal forward pass: int `[B, T]` ids -> float32 `[B, T, V]`."""
        return self._logits(self.residual_stream(token_ids, training=training))

    def residual_stream(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The last block's output `[B, T, D]` (before the final norm): what the LM head
        and `tfllm.models.llama_classifier` read."""
        x = self.token_embedding(token_ids)
        for block in self.blocks:
            x = checkpointed(lambda h, b=block: b(h, training=training)[0], x, self.remat_blocks)
        return x

    def init_cache(self, batch_size: int | tf.Tensor, length: int | None = None) -> KVCache:
        """All-zero caches: per layer keys and values `[B, num_kv_heads, length, head_dim]`."""
        length = self.max_length if length is None else length
        shape = [batch_size, self.num_kv_heads, length, self.head_dim]
        return tuple(
            (tf.zeros(shape, self.compute_dtype), tf.zeros(shape, self.compute_dtype))
            for _ in range(self.num_layers)
        )

    def call_with_cache(
        self,
        token_ids: tf.Tensor,
        cache: KVCache,
        cache_index: int | tf.Tensor,
        cache_update: CacheUpdate = "slice",
        pad: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, KVCache]:
        """Slots `cache_index … cache_index + t - 1` against the cache (prefill or decode).

        The same contract as `GPT.call_with_cache` (`pad`: left padding per row):
        returns `(logits [B, t, V], new_cache)`.
        """
        if not callable(cache_update) and cache_update not in CACHE_UPDATES:
            raise ValueError(f"cache_update must be one of {CACHE_UPDATES}, got {cache_update!r}")
        x = self.token_embedding(token_ids)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, layer_cache = block(
                x, cache=layer_cache, index=cache_index, cache_update=cache_update, pad=pad
            )
            new_cache.append(layer_cache)
        return self._logits(x), tuple(new_cache)

    def num_params(self) -> int:
        """Parameter count (a tied embedding counts once)."""
        return self.count_params()

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, 6N + 12·L·(H·Dh)·T (as `GPT.flops_per_token`).

        The embedding lookup does no matmul, so it leaves N unless it is also the head.
        """
        n = self.num_params()
        if not self.tie_embeddings:
            n -= self.vocab_size * self.hidden_dim
        return 6 * n + 12 * self.num_layers * self.num_heads * self.head_dim * seq_len

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
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
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Llama:
        return cls(**config)
