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

from tfllm.inference.generate import CACHE_BUCKET
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


def fold_in_rows(seeds: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """`fold_in(seed_i, step_i)` for every row (`[B, 2]`, `[B]` int32): rows that
    joined a running batch at different times are at different steps."""

    def one(seed: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.random.experimental.stateless_fold_in(seed, step, alg="philox")

    if seeds.shape[0] is not None:
        return tf.stack([one(seeds[i], steps[i]) for i in range(seeds.shape[0])])
    return tf.map_fn(
        lambda pair: one(*pair), (seeds, steps), fn_output_signature=tf.TensorSpec([2], tf.int32)
    )


def pick_tokens(
    step: tf.Tensor,
    logits: tf.Tensor,
    done: tf.Tensor,
    settings: RowSettings,
    eos_id: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """New token `step[i]` of every row i and which rows are finished after it.

    The rule of `tfllm.inference.generate.sample_step` (seed `fold_in(seed, step)`,
    finished rows repeat eos), with each row's sampler; a row is also finished
    once it has its `max_new_tokens`.
    """
    step_seeds = fold_in_rows(settings.seeds, step)
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
    """Up to `num_steps` more tokens after `token` (row i's new token `step[i] - 1`,
    all written at cache `slot`).

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
    batch = tf.shape(ids)[0]
    done = tf.zeros([batch], tf.bool)
    first, done = pick_tokens(tf.zeros([batch], tf.int32), logits, done, settings, eos_id)
    ones = tf.ones([batch], tf.int32)
    rest, *_ = decode_rows(model, first, cache, width, pad, ones, done, settings, most - 1, eos_id)
    return tf.concat([first[:, tf.newaxis], rest], axis=1)


def cache_slots(needed: int) -> int:
    """Cache length for a batch that needs `needed` slots: a power of two ≥ CACHE_BUCKET.

    Powers of two rather than multiples of CACHE_BUCKET: every distinct length
    is one more XLA compile of the decode chunk per batch size, and a server
    compiles them before it serves (`RowDecoder.compile`).
    """
    slots = CACHE_BUCKET
    while slots < needed:
        slots *= 2
    return slots


@dataclass
class RunningBatch:
    """A batch being decoded, which rows can leave and join (continuous batching).

    Every row writes its next token at the shared cache `slot`; a row that
    joins at slot g with a P-token prompt puts the prompt at slots g-P…g-1
    (its `pad` is g-P), so it computes what it would alone. Per-row values
    are NumPy (cheap to edit between chunks); the cache stays on device.
    """

    cache: KVCache
    length: int
    slot: int
    token: np.ndarray
    done: np.ndarray
    step: np.ndarray
    pad: np.ndarray
    settings: dict[str, np.ndarray]

    def fits(self, prompt_tokens: int, budget: int) -> bool:
        """Whether a new row can join now: its prompt before `slot`, its budget after."""
        return prompt_tokens <= self.slot and self.slot + budget <= self.length

    def row_settings(self) -> RowSettings:
        return RowSettings(*(tf.constant(self.settings[name]) for name in SETTING_DTYPES))


SETTING_DTYPES = {"samplers": np.int32, "temperature": np.float32, "top_k": np.int32,
                  "top_p": np.float32, "seeds": np.int64, "max_new_tokens": np.int32}  # fmt: skip


def settings_arrays(settings: RowSettings) -> dict[str, np.ndarray]:
    """`settings` as NumPy arrays by field name (`RowSettings`' order)."""
    values = zip(SETTING_DTYPES.items(), settings.as_tuple(), strict=True)
    return {name: np.asarray(t.numpy(), dtype) for (name, dtype), t in values}


def _settings_spec() -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None, 2], tf.int64),
        tf.TensorSpec([None], tf.int32),
    ]


class RowDecoder:
    """Compiled prefill, join and chunked decode for a server's batches.

    The prefills are plain graphs, one trace for every shape (the prompt
    width varies; see `tfllm.inference.generate` for why they stay out of
    XLA). The chunk of decode steps and the cache-row write of a joining
    request are XLA-compiled once per (batch size, cache length): servers
    keep the batch size fixed, lengths are powers of two (`cache_slots`),
    and `compile` builds the likely ones ahead of time.
    """

    def __init__(self, model: keras.Model, eos_id: int, chunk: int = 4, use_xla: bool = True):
        self.model = model
        self.eos_id = eos_id
        self.chunk = chunk
        ids = tf.TensorSpec([None, None], tf.int32)
        rows = tf.TensorSpec([None], tf.int32)
        scalar = tf.TensorSpec([], tf.int32)
        self._prefill = tf.function(
            self._prefill_and_pick, input_signature=[ids, rows, scalar, *_settings_spec()]
        )
        self._prefill_one = tf.function(
            self._prefill_row, input_signature=[ids, scalar, scalar, *_settings_spec()]
        )
        # Traced per shape: XLA needs the cache length static.
        self._decode = tf.function(self._decode_chunk, jit_compile=use_xla)
        self._write_row = tf.function(_write_row, jit_compile=use_xla)
        self.compiled: set[tuple[int, int]] = set()

    def _prefill_and_pick(self, ids, pad, length, *settings):
        rows = RowSettings(*settings)
        logits, cache = prefill_rows(self.model, ids, pad, length)
        batch = tf.shape(ids)[0]
        zeros = tf.zeros([batch], tf.int32)
        token, done = pick_tokens(zeros, logits, tf.zeros([batch], tf.bool), rows, self.eos_id)
        return token, done, cache

    def _prefill_row(self, ids, start, length, *settings):
        """One prompt `[1, P]` at cache slots start…start+P-1 of its own cache row."""
        cache = self.model.init_cache(1, length)
        logits, cache = self.model.call_with_cache(ids, cache, start, pad=start[tf.newaxis])
        zeros = tf.zeros([1], tf.int32)
        no = tf.zeros([1], tf.bool)
        token, done = pick_tokens(zeros, logits[:, -1, :], no, RowSettings(*settings), self.eos_id)
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

    def start(self, prompts: Sequence[Sequence[int]], settings: RowSettings, length: int):
        """Prefills a batch (left-padded); returns it and each row's first token."""
        ids, pad = left_pad(prompts, self.eos_id)
        token, done, cache = self._prefill(ids, pad, tf.constant(length), *settings.as_tuple())
        batch = RunningBatch(
            cache=cache,
            length=length,
            slot=ids.shape[1],
            token=token.numpy(),
            done=done.numpy(),
            step=np.ones([len(prompts)], np.int32),
            pad=pad,
            settings=settings_arrays(settings),
        )
        return batch, batch.token.copy()

    def join(self, batch: RunningBatch, row: int, prompt: Sequence[int], settings: RowSettings):
        """Puts a new request in `row` of a running batch (`batch.fits` it); returns
        its first token."""
        start = batch.slot - len(prompt)
        token, done, row_cache = self._prefill_one(
            np.asarray([prompt], np.int32), start, batch.length, *settings.as_tuple()
        )
        batch.cache = self._write_row(batch.cache, row_cache, tf.constant(row, tf.int32))
        batch.token[row], batch.done[row] = int(token[0]), bool(done[0])
        batch.step[row], batch.pad[row] = 1, start
        for name, values in settings_arrays(settings).items():
            batch.settings[name][row] = values[0]
        return int(token[0])

    def widen(self, batch: RunningBatch, rows: int) -> None:
        """Gives a running batch `rows` rows (more than it has): the new ones are
        idle (finished) until a request joins them. For load that arrives after a
        narrow batch started: its requests join instead of waiting for it to drain."""
        extra = rows - len(batch.token)
        grow = [[0, extra], [0, 0], [0, 0], [0, 0]]
        batch.cache = tuple(tuple(tf.pad(t, grow) for t in layer) for layer in batch.cache)
        batch.token = np.concatenate([batch.token, np.full([extra], self.eos_id, np.int32)])
        batch.done = np.concatenate([batch.done, np.ones([extra], bool)])
        batch.step = np.concatenate([batch.step, np.ones([extra], np.int32)])
        batch.pad = np.concatenate([batch.pad, np.zeros([extra], np.int32)])
        for name, values in batch.settings.items():
            filler = np.repeat(values[:1], extra, axis=0)
            batch.settings[name] = np.concatenate([values, filler])

    def advance(self, batch: RunningBatch) -> np.ndarray:
        """One chunk of decode steps for every row; returns `[B, chunk]` new tokens
        (eos in finished rows and after the last step)."""
        tokens, token, cache, step, done = self._decode(
            tf.constant(batch.token),
            batch.cache,
            tf.constant(batch.slot, tf.int32),
            tf.constant(batch.pad),
            tf.constant(batch.step),
            tf.constant(batch.done),
            *batch.row_settings().as_tuple(),
        )
        batch.cache, batch.slot = cache, batch.slot + self.chunk
        batch.token, batch.step, batch.done = token.numpy(), step.numpy(), done.numpy()
        return tokens.numpy()

    def compile(self, batch: int, length: int) -> None:
        """Builds the decode chunk and the row write for `batch` rows and a
        `length`-slot cache, by running them once on a dummy batch."""
        settings = RowSettings.from_numpy(
            [0] * batch, [1.0] * batch, [0] * batch, [1.0] * batch, [0] * batch, [2] * batch
        )
        one = RowSettings.from_numpy([0], [1.0], [0], [1.0], [0], [2])
        running, _ = self.start([[self.eos_id]] * batch, settings, length)
        self.join(running, 0, [self.eos_id], one)
        running.done[:] = False
        self.advance(running)
        self.compiled.add((batch, length))

    def stream(self, prompts: Sequence[Sequence[int]], settings: RowSettings):
        """Yields `[B, n]` int32 arrays of new tokens (first the prefill's one, then
        chunks) until every row is finished. Each row must fit on its own:
        its prompt + budget ≤ max_length."""
        width = max(len(p) for p in prompts)
        budget = int(np.max(settings.max_new_tokens.numpy()))
        # Not capped at max_length: a row with a small budget may keep a longer
        # prompt than the row with the largest budget (each row fits alone).
        batch, first = self.start(prompts, settings, cache_slots(width + budget))
        yield first[:, np.newaxis]
        while not batch.done.all():
            yield self.advance(batch)


def _write_row(cache: KVCache, row_cache: KVCache, row: tf.Tensor) -> KVCache:
    """`cache` with batch row `row` replaced by `row_cache` (batch 1), every layer."""
    return tuple(
        tuple(
            keras.ops.slice_update(whole, [row, 0, 0, 0], part)
            for whole, part in zip(layer, row_layer, strict=True)
        )
        for layer, row_layer in zip(cache, row_cache, strict=True)
    )
