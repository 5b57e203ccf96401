"""Batched decoding where every row has its own prompt, sampler, seed and budget.

`tfllm.inference.generate` decodes a batch whose rows share one prompt length
and one sampler. A server's batch is made of unrelated requests, so here each
row brings its own: prompts of any length are LEFT-padded to the batch's
longest (the model is told each row's `pad`, so a row's positions and
attention are those it has alone: `tfllm.models.gpt.visible_slots`), and
each row has its own sampler, temperature/top-k/top-p, seed and number of new
tokens (`RowSettings`). Row i then gives exactly the tokens a one-prompt
`Generator.generate(..., seed=seed_i)` gives (tested for every sampler).

Two drivers share `prefill_rows`, `first_tokens` and `decode_rows`:

- the batched SavedModel traces them into one graph (`decode_rows` with as
  many steps as the largest budget);
- `RowDecoder` (the server) runs `decode_rows` a few steps at a time under
  XLA and hands each chunk of tokens out as soon as it exists (streaming).
  Chunks rather than single steps: every call copies the cache in and out
  of the compiled function, so one call per token costs a cache copy per
  token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from tfllm.inference.generate import CACHE_BUCKET, fold_in_step
from tfllm.inference.sampling import sample_rows
from tfllm.models.gpt import KVCache


@dataclass
class RowSettings:
    """Per-row sampling settings, each a tensor with one entry per row.

    `samplers` indexes `tfllm.config.SAMPLERS`; `seeds` is `[B, 2]` (a seed s
    of `tfllm-generate` is the pair `[s, 0]`); `max_new_tokens` is each row's
    budget (≥ 1).
    """

    samplers: tf.Tensor
    temperature: tf.Tensor
    top_k: tf.Tensor
    top_p: tf.Tensor
    seeds: tf.Tensor
    max_new_tokens: tf.Tensor

    def as_tuple(self) -> tuple[tf.Tensor, ...]:
        return (
            self.samplers,
            self.temperature,
            self.top_k,
            self.top_p,
            self.seeds,
            self.max_new_tokens,
        )

    @classmethod
    def from_numpy(
        cls,
        samplers: Sequence[int],
        temperature: Sequence[float],
        top_k: Sequence[int],
        top_p: Sequence[float],
        seeds: Sequence[int],
        max_new_tokens: Sequence[int],
    ) -> RowSettings:
        return cls(
            tf.constant(samplers, tf.int32),
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
            tf.constant([[s, 0] for s in seeds], tf.int64),
            tf.constant(max_new_tokens, tf.int32),
        )


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of any length as one `[B, P]` int32 array, right-aligned: `(ids, pad)`."""
    width = max(len(r) for r in rows)
    ids = np.full([len(rows), width], pad_id, np.int32)
    pad = np.zeros([len(rows)], np.int32)
    for i, row in enumerate(rows):
        pad[i] = width - len(row)
        ids[i, pad[i] :] = row
    return ids, pad


def prefill_rows(
    model: keras.Model, ids: tf.Tensor, pad: tf.Tensor, length: int | tf.Tensor
) -> tuple[tf.Tensor, KVCache]:
    """The left-padded prompts `[B, P]` through the model: last logits `[B, V]` and cache."""
    cache = model.init_cache(tf.shape(ids)[0], length)
    logits, cache = model.call_with_cache(ids, cache, tf.constant(0, tf.int32), pad=pad)
    return logits[:, -1, :], cache


def pick_tokens(
    step: tf.Tensor,
    logits: tf.Tensor,
    done: tf.Tensor,
    settings: RowSettings,
    eos_id: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """New token `step` of every row and which rows are finished after it.

    The rule of `tfllm.inference.generate.sample_step` (seed `fold_in(seed, step)`,
    finished rows repeat eos), with each row's sampler; a row is also finished
    once it has its `max_new_tokens`.
    """
    step_seeds = fold_in_step(settings.seeds, step)
    token = sample_rows(
        logits,
        settings.samplers,
        settings.temperature,
        settings.top_k,
        settings.top_p,
        step_seeds,
    )
    token = tf.where(done, tf.constant(eos_id, tf.int32), token)
    done = tf.logical_or(done, tf.equal(token, eos_id))
    return token, tf.logical_or(done, step + 1 >= settings.max_new_tokens)


def decode_rows(
    model: keras.Model,
    token: tf.Tensor,
    cache: KVCache,
    slot: tf.Tensor,
    pad: tf.Tensor,
    step: tf.Tensor,
    done: tf.Tensor,
    settings: RowSettings,
    num_steps: tf.Tensor | int,
    eos_id: int,
) -> tuple[tf.Tensor, tf.Tensor, KVCache, tf.Tensor, tf.Tensor]:
    """Up to `num_steps` more tokens after `token` (new token `step - 1`, at cache `slot`).

    Returns `(tokens [B, num_steps], token, cache, step, done)`: the state to
    continue from. Unproduced slots (every row finished early) hold eos.
    """
    batch = tf.shape(token)[0]
    slots = tf.range(num_steps, dtype=tf.int32)[tf.newaxis, :]
    buffer = tf.fill([batch, num_steps], tf.constant(eos_id, tf.int32))

    def cond(i, token, cache, step, done, buffer):
        return tf.logical_and(i < num_steps, tf.logical_not(tf.reduce_all(done)))

    def body(i, token, cache, step, done, buffer):
        logits, cache = model.call_with_cache(token[:, tf.newaxis], cache, slot + i, pad=pad)
        token, done = pick_tokens(step, logits[:, 0, :], done, settings, eos_id)
        buffer = tf.where(tf.equal(slots, i), token[:, tf.newaxis], buffer)
        return i + 1, token, cache, step + 1, done, buffer

    _, token, cache, step, done, buffer = tf.while_loop(
        cond, body, (tf.constant(0, tf.int32), token, cache, step, done, buffer)
    )
    return buffer, token, cache, step, done


def generate_rows(
    model: keras.Model,
    ids: tf.Tensor,
    pad: tf.Tensor,
    settings: RowSettings,
    eos_id: int,
) -> tf.Tensor:
    """Every row's new tokens `[B, max(max_new_tokens)]` in one graph (eos after a row ends).

    The cache holds exactly prompt + budget positions: decode steps cost in
    proportion to it. The caller fits each row (`prompt + budget ≤ max_length`).
    """
    width = tf.shape(ids)[1]
    most = tf.reduce_max(settings.max_new_tokens)
    logits, cache = prefill_rows(model, ids, pad, width + most)
    done = tf.zeros([tf.shape(ids)[0]], tf.bool)
    first, done = pick_tokens(tf.constant(0, tf.int32), logits, done, settings, eos_id)
    rest, *_ = decode_rows(
        model, first, cache, width, pad, tf.constant(1, tf.int32), done, settings, most - 1, eos_id
    )
    return tf.concat([first[:, tf.newaxis], rest], axis=1)


class RowDecoder:
    """Compiled prefill and chunked decode for a server's batches.

    Traced once per (batch size, cache length): callers pad the batch to a
    few sizes and `cache_length` rounds lengths to CACHE_BUCKET, so a warm
    server does not compile while it serves. The prefill is a plain graph
    (its prompt width varies; see `tfllm.inference.generate` for why it stays
    out of XLA); the chunk of decode steps is XLA-compiled.
    """

    def __init__(self, model: keras.Model, eos_id: int, chunk: int = 4, use_xla: bool = True):
        self.model = model
        self.eos_id = eos_id
        self.chunk = chunk
        # Traced per shape (no reduce_retracing): the cache length must stay static.
        self._prefill = tf.function(self._prefill_and_pick)
        self._decode = tf.function(self._decode_chunk, jit_compile=use_xla)

    def _prefill_and_pick(self, ids, pad, length, *settings):
        rows = RowSettings(*settings)
        logits, cache = prefill_rows(self.model, ids, pad, length)
        done = tf.zeros([tf.shape(ids)[0]], tf.bool)
        token, done = pick_tokens(tf.constant(0, tf.int32), logits, done, rows, self.eos_id)
        return token, done, cache

    def _decode_chunk(self, token, cache, slot, pad, step, done, *settings):
        return decode_rows(
            self.model,
            token,
            cache,
            slot,
            pad,
            step,
            done,
            RowSettings(*settings),
            self.chunk,
            self.eos_id,
        )

    def stream(self, prompts: Sequence[Sequence[int]], settings: RowSettings):
        """Yields `[B, n]` int32 arrays of new tokens (first the prefill's one, then
        chunks) until every row is finished. Each row must fit on its own:
        its prompt + budget ≤ max_length."""
        ids, pad = left_pad(prompts, self.eos_id)
        budget = int(np.max(settings.max_new_tokens.numpy()))
        # Not capped at max_length: a row with a small budget may keep a longer
        # prompt than the row with the largest budget (each row fits alone).
        length = -(-(ids.shape[1] + budget) // CACHE_BUCKET) * CACHE_BUCKET
        row_settings = settings.as_tuple()
        token, done, cache = self._prefill(
            tf.constant(ids), tf.constant(pad), length, *row_settings
        )
        yield token.numpy()[:, np.newaxis]
        slot, step = tf.constant(ids.shape[1], tf.int32), tf.constant(1, tf.int32)
        while not bool(tf.reduce_all(done)):
            tokens, token, cache, step, done = self._decode(
                token, cache, slot, tf.constant(pad), step, done, *row_settings
            )
            slot += self.chunk
            yield tokens.numpy()
