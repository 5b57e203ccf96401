"""Autoregressive generation with a static KV cache.

One loop serves every caller: `generate_ids` prefills the prompt once with
`model.call_with_cache(prompt, cache, 0)`, then decodes one position per step
inside `tf.while_loop`, carrying a static-shape cache (`model.init_cache`) and a
static-width token buffer `[B, cache length]`. Because nothing in the loop has a
data-dependent shape, the same code runs eagerly, traced into a `tf.function`
with a dynamic prompt length and a tensor `max_new_tokens` (what a SavedModel
export needs), and under XLA.

XLA: `Generator(use_xla=True)` compiles the whole decode loop (every step after
the prefill) as one `jit_compile=True` function, and runs the prefill as a plain
graph function. The prefill stays out of XLA on purpose: XLA specialises on
input shapes, so a compiled prefill would recompile for every new prompt
length, while the decode loop's shapes depend only on the batch size.
Likewise the final `[:, :max_new_tokens]` slice happens outside XLA, since a
shape that depends on a tensor's value cannot be compiled.

The model must provide `init_cache(batch_size, length)` (per layer a (keys,
values) pair, each `[B, heads, length, head_dim]`), `call_with_cache(ids, cache, index)
-> (logits, cache)` and `max_length` (see `tfllm.models.gpt.GPT`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from tfllm.inference.sampling import check_sampler_args, map_rows, sample_next
from tfllm.models.gpt import CacheUpdate, KVCache

TensorLike = float | int | tf.Tensor


class Tokenizer(Protocol):
    """What `generate_text` needs from a tokenizer."""

    eos_id: int
    bos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def fit_prompt(
    prompt_ids: Sequence[int] | np.ndarray, max_new_tokens: int, max_length: int
) -> tuple[np.ndarray, int]:
    """Make `prompt + max_new_tokens <= max_length` hold before generating.

    `max_new_tokens` is clamped to `max_length - 1` (one prompt token is the
    least the prefill needs), then the prompt is truncated from the LEFT, since
    the most recent context matters most for the continuation. Accepts `[P]`
    or `[B, P]` and keeps the rank. Returns `(prompt_ids, max_new_tokens)`.
    """
    prompt = np.asarray(prompt_ids, dtype=np.int32)
    max_new_tokens = max(0, min(int(max_new_tokens), max_length - 1))
    keep = max_length - max_new_tokens
    return prompt[..., -keep:], max_new_tokens


CACHE_BUCKET = 64  # cache lengths are rounded up to this, bounding XLA recompiles


def cache_length(needed: int, max_length: int) -> int:
    """The KV-cache length for `needed` positions: a multiple of CACHE_BUCKET."""
    return min(max_length, -(-needed // CACHE_BUCKET) * CACHE_BUCKET)


def prefill(
    model: keras.Model,
    prompt_ids: tf.Tensor,
    length: int | None = None,
    cache_update: CacheUpdate = "slice",
) -> tuple[tf.Tensor, KVCache]:
    """Run the whole prompt once; return the last position's logits and cache."""
    cache = model.init_cache(tf.shape(prompt_ids)[0], length)
    logits, cache = model.call_with_cache(prompt_ids, cache, tf.constant(0, tf.int32), cache_update)
    return logits[:, -1, :], cache


def fold_in_step(seed: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """`fold_in(seed, step)` for one seed [2] or for each row's seed [B, 2]."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 2:
        return map_rows(
            lambda row_seed: tf.random.experimental.stateless_fold_in(row_seed, step, alg="philox"),
            seed,
            tf.TensorSpec([2], tf.int32),
        )
    return tf.random.experimental.stateless_fold_in(seed, step, alg="philox")


def sample_step(
    step: tf.Tensor | int,
    logits: tf.Tensor,
    done: tf.Tensor,
    seed: tf.Tensor,
    sampler: str,
    temperature: TensorLike,
    top_k: TensorLike,
    top_p: TensorLike,
    eos_id: int | None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """New token `step` from `logits` [B, V]: `(token [B] int32, done [B] bool)`.

    The one sampling rule every backend shares (the Keras/XLA loop below and
    the LiteRT loop in `tfllm.inference.lm_tflite_runner`): step `i` draws with seed
    `fold_in(seed, i)`, so a seed gives the same text everywhere, and rows that
    already emitted `eos_id` keep emitting it. `seed` is one [2] seed or one
    per row ([B, 2], batch generation: row i then samples exactly what a batch
    of one with `seed[i]` samples).
    """
    step = tf.convert_to_tensor(step, tf.int32)
    step_seed = fold_in_step(seed, step)
    token = sample_next(logits, sampler, temperature, top_k, top_p, step_seed)
    if eos_id is not None:
        token = tf.where(done, tf.constant(eos_id, tf.int32), token)
        done = tf.logical_or(done, tf.equal(token, eos_id))
    return token, done


def decode_loop(
    model: keras.Model,
    logits: tf.Tensor,
    cache: KVCache,
    prompt_len: tf.Tensor,
    max_new_tokens: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    top_p: tf.Tensor,
    seed: tf.Tensor,
    *,
    sampler: str,
    eos_id: int | None,
    cache_update: CacheUpdate = "slice",
    whole: Callable[[tf.Tensor], tf.Tensor] = tf.identity,
) -> tf.Tensor:
    """Sample `max_new_tokens` tokens after a prefill; returns `[B, max_length]`.

    Slot `i` of the buffer holds new token `i`; slots past the last one hold
    `eos_id` (or 0). Step `i` draws with seed `fold_in(seed, i)`, so draws are
    independent across steps yet fully determined by `seed`. Stops early once
    every row has produced `eos_id`. `cache_update` is how each step writes the
    cache (`GPT.call_with_cache`); `whole` is applied to the logits before
    sampling (a tensor-parallel mesh gathers them there, see
    `tfllm.inference.distributed.BatchGenerator`).
    """
    batch = tf.shape(logits)[0]
    width = cache[0][0].shape[2] if cache[0][0].shape[2] is not None else model.max_length
    pad = 0 if eos_id is None else eos_id
    slots = tf.range(width, dtype=tf.int32)[tf.newaxis, :]

    def sample(step: tf.Tensor, step_logits: tf.Tensor, done: tf.Tensor) -> tuple:
        return sample_step(
            step, whole(step_logits), done, seed, sampler, temperature, top_k, top_p, eos_id
        )

    def write(buffer: tf.Tensor, step: tf.Tensor, token: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.equal(slots, step), token[:, tf.newaxis], buffer)

    buffer = tf.fill([batch, width], tf.constant(pad, tf.int32))
    done = tf.zeros([batch], tf.bool)
    step = tf.constant(0, tf.int32)
    token, done = sample(step, logits, done)
    buffer = write(buffer, step, token)

    def cond(
        step: tf.Tensor, token: tf.Tensor, cache: KVCache, buffer: tf.Tensor, done: tf.Tensor
    ) -> tf.Tensor:
        return tf.logical_and(step + 1 < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    def body(
        step: tf.Tensor, token: tf.Tensor, cache: KVCache, buffer: tf.Tensor, done: tf.Tensor
    ) -> tuple:
        # The previous token sits at position prompt_len + step.
        step_logits, cache = model.call_with_cache(
            token[:, tf.newaxis], cache, prompt_len + step, cache_update
        )
        step = step + 1
        token, done = sample(step, step_logits[:, 0, :], done)
        return step, token, cache, write(buffer, step, token), done

    _, _, _, buffer, _ = tf.while_loop(
        cond,
        body,
        (step, token, cache, buffer, done),
        maximum_iterations=width,
    )
    return buffer


def generate_ids(
    model: keras.Model,
    prompt_ids: tf.Tensor | np.ndarray,
    max_new_tokens: int | tf.Tensor,
    *,
    sampler: str = "greedy",
    temperature: TensorLike = 1.0,
    top_k: TensorLike = 0,
    top_p: TensorLike = 1.0,
    seed: tf.Tensor | tuple[int, int] = (0, 0),
    eos_id: int | None = None,
) -> tf.Tensor:
    """Generate continuations of dense `prompt_ids` [B, P]; returns int32 [B, n].

    `n = max_new_tokens`; only new tokens are returned, and after a row emits
    `eos_id` its remaining tokens are `eos_id`. The caller guarantees
    `P >= 1` and `P + max_new_tokens <= model.max_length` (see `fit_prompt`).
    Works eagerly and traced with `prompt_ids` of shape `[B, None]` and a
    scalar int32 tensor `max_new_tokens`.
    """
    prompt_ids = tf.convert_to_tensor(prompt_ids, tf.int32)
    max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
    logits, cache = prefill(model, prompt_ids)
    buffer = decode_loop(
        model,
        logits,
        cache,
        tf.shape(prompt_ids)[1],
        max_new_tokens,
        tf.convert_to_tensor(temperature, tf.float32),
        tf.convert_to_tensor(top_k, tf.int32),
        tf.convert_to_tensor(top_p, tf.float32),
        tf.convert_to_tensor(seed),
        sampler=sampler,
        eos_id=eos_id,
    )
    return buffer[:, :max_new_tokens]


class Generator:
    """Holds a model and its compiled prefill/decode functions for reuse.

    Functions are traced once per (sampler, eos_id) and batch size; prompt
    length, token count, temperature, top_k, top_p and seed are tensors, so
    changing them never retraces. With `use_xla`, the decode loop is compiled
    with `jit_compile=True` (see the module docstring for why the prefill is
    not).
    """

    def __init__(self, model: keras.Model, use_xla: bool = True) -> None:
        self.model = model
        self.use_xla = use_xla
        self._prefills: dict[int, Callable[..., tuple[tf.Tensor, KVCache]]] = {}
        self._decoders: dict[tuple[str, int | None], Callable[..., tf.Tensor]] = {}

    def _decoder(self, sampler: str, eos_id: int | None) -> Callable[..., tf.Tensor]:
        key = (sampler, eos_id)
        if key not in self._decoders:

            def decode(*args: Any) -> tf.Tensor:
                return decode_loop(self.model, *args, sampler=sampler, eos_id=eos_id)

            self._decoders[key] = tf.function(
                decode, jit_compile=self.use_xla, reduce_retracing=True
            )
        return self._decoders[key]

    def generate(
        self,
        prompt_ids: np.ndarray | list[int],
        max_new_tokens: int,
        sampler: str = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        eos_id: int | None = None,
    ) -> np.ndarray:
        """Continue a prompt `[P]` (returns `[n]`) or a batch `[B, P]` (`[B, n]`).

        The prompt is fitted to the model with `fit_prompt` (left truncation,
        `max_new_tokens` clamped to `max_length - 1`).
        """
        check_sampler_args(sampler, temperature, top_k, top_p, max_new_tokens)
        prompt = np.asarray(prompt_ids, dtype=np.int32)
        if prompt.shape[-1] == 0:
            raise ValueError("prompt_ids is empty; start from e.g. [eos_id]")
        single = prompt.ndim == 1
        prompt, max_new_tokens = fit_prompt(
            np.atleast_2d(prompt), max_new_tokens, self.model.max_length
        )
        # Size the cache to what this call needs (bucketed): decode cost per step
        # grows with the cache length, and a full-context cache is mostly zeros.
        length = cache_length(prompt.shape[1] + max_new_tokens, self.model.max_length)
        if length not in self._prefills:
            self._prefills[length] = tf.function(
                lambda ids, n=length: prefill(self.model, ids, n),
                input_signature=[tf.TensorSpec([None, None], tf.int32)],
            )
        logits, cache = self._prefills[length](tf.constant(prompt))
        buffer = self._decoder(sampler, eos_id)(
            logits,
            cache,
            tf.constant(prompt.shape[1], tf.int32),
            tf.constant(max_new_tokens, tf.int32),
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
            tf.constant([seed, 0], tf.int64),
        )
        out = buffer.numpy()[:, :max_new_tokens]
        return out[0] if single else out


def generate_text(
    generator: Generator,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    **sampling: Any,
) -> list[str]:
    """Continue each prompt; returns only the continuations, cut at eos.

    An empty prompt starts from `[eos_id]`: training documents are separated
    by eos, so eos is the natural "start of a document" context.
    """
    texts = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
        new = generator.generate(ids, max_new_tokens, eos_id=tokenizer.eos_id, **sampling).tolist()
        if tokenizer.eos_id in new:
            new = new[: new.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(new))
    return texts
