"""Inference under any strategy: batched generation, LM loss and classifier
probabilities, each row sharded over replicas with `tfllm.distribute.rows.RowSharder`
(row i in, row i out, on every worker; see that module for how and why).

`tfllm-generate --input_file` and `tfllm-evaluate` both run through here.

Exactness: a row's result does not depend on the other rows of its batch as
long as the per-row computation is the same; on this host's CPU kernels the
logits of a row agree bit for bit between batch sizes and devices (tested),
so greedy text equals the one-device text exactly. Tensor parallelism splits
the row-parallel matmuls' sums over devices, which changes float rounding, so
its logits agree only to ~1e-6 (DESIGN: "logits agree to < 1e-5").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from tfllm.distribute.rows import RowSharder
from tfllm.distribute.strategy import placement, replicas
from tfllm.inference.generate import cache_length, decode_loop, fit_prompt, prefill
from tfllm.inference.sampling import check_sampler_args
from tfllm.models.gpt import write_cache


def _blend_write(cache: tf.Tensor, update: tf.Tensor, index) -> tf.Tensor:
    """The GPT's cache write whose every op has a DTensor layout rule (for a mesh)."""
    return write_cache(cache, update, index, "blend")


@dataclass
class Completion:
    """One prompt's result: new token ids (eos and after removed) and why it stopped."""

    prompt_ids: list[int]
    ids: list[int]
    finish: str  # "eos" or "length"


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by token length, in chunks of at most `batch_size`.

    The KV-cache decode gives every row of a batch the same positions (one
    scalar cache index), so rows must have equal prompt lengths; padding a
    shorter prompt would shift its positions and change its text. Groups are
    ordered by first appearance and keep input order inside, so the plan is
    the same on every worker.
    """
    groups: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        groups.setdefault(length, []).append(i)
    return [
        members[k : k + batch_size]
        for members in groups.values()
        for k in range(0, len(members), batch_size)
    ]


class BatchGenerator:
    """Generates for a list of prompts under a strategy; results in input order.

    Prompts are fitted like `Generator.generate` (left truncation,
    `max_new_tokens` clamped), bucketed by length (`plan_batches`), and each
    bucket is sharded over replicas by `RowSharder`. Each row decodes with
    its own seed `[seed_i, 0]`, so prompt i with seed `s_i` gives the text a
    one-prompt `Generator.generate(..., seed=s_i)` gives, in any batch.

    Batches are padded to `batch_size` rows (rounded up to the replica count),
    so the XLA decode loop compiles once per cache-length bucket, not per
    bucket size (the price: a bucket of one prompt decodes a whole batch).
    """

    def __init__(self, model: keras.Model, strategy, batch_size: int, use_xla: bool = True):
        self.model = model
        self.strategy = strategy
        self.rows = -(-batch_size // replicas(strategy)) * replicas(strategy)
        self.batch_size = batch_size
        placed = placement(strategy)
        on_mesh = placed is not None and placed.sharded_inputs
        self.use_xla = use_xla and not on_mesh
        # On a mesh: the cache write DTensor can lay out, and sampling on values
        # whole on every device (logits gathered from the batch shards, seeds
        # replicated): sampling takes seeds row by row, which DTensor cannot do on a
        # batch-sharded tensor ("SPMD expansion resulted in op output inconsistent
        # with the provided layout", measured). No XLA: DTensor runs the loop.
        self.cache_update = placed.cache_writer(_blend_write) if on_mesh else "slice"
        self._whole = placed.replicate if on_mesh else tf.identity
        self._sharders: dict[tuple, RowSharder] = {}

    def _sharder(self, length: int, n: int, sampling: tuple, eos_id: int | None) -> RowSharder:
        key = (length, n, sampling, eos_id)
        if key not in self._sharders:
            sampler, temperature, top_k, top_p = sampling
            model = self.model
            cache_update, whole = self.cache_update, self._whole
            decode = tf.function(
                lambda *a: decode_loop(
                    model,
                    *a,
                    sampler=sampler,
                    eos_id=eos_id,
                    cache_update=cache_update,
                    whole=whole,
                ),
                jit_compile=self.use_xla,
                reduce_retracing=True,
            )

            def per_replica(values):
                prompts, seeds = values
                logits, cache = prefill(model, prompts, length, cache_update)
                buffer = decode(
                    logits,
                    cache,
                    tf.shape(prompts)[1],
                    tf.constant(n, tf.int32),
                    tf.constant(temperature, tf.float32),
                    tf.constant(top_k, tf.int32),
                    tf.constant(top_p, tf.float32),
                    whole(seeds),
                )
                return buffer[:, :n]

            self._sharders[key] = RowSharder(self.strategy, per_replica)
        return self._sharders[key]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        sampler: str = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
        eos_id: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Continues every prompt (token ids, each non-empty); `on_batch(rows done)`."""
        check_sampler_args(sampler, temperature, top_k, top_p, max_new_tokens)
        seeds = list(range(len(prompts))) if seeds is None else list(seeds)
        fitted = []
        n = max_new_tokens
        for ids in prompts:
            if not len(ids):
                raise ValueError("every prompt needs at least one token (start from [eos_id])")
            prompt, n = fit_prompt(np.asarray(ids, np.int32), max_new_tokens, self.model.max_length)
            fitted.append(prompt)
        results: list[Completion | None] = [None] * len(prompts)
        sampling = (sampler, float(temperature), int(top_k), float(top_p))
        for batch in plan_batches([len(p) for p in fitted], self.batch_size):
            prompt_len = len(fitted[batch[0]])
            length = cache_length(prompt_len + n, self.model.max_length)
            # Pad every chunk to the same row count (repeats of its last row, dropped
            # below): the XLA decode loop then compiles once per cache length.
            take = batch + [batch[-1]] * (self.rows - len(batch))
            ids = np.stack([fitted[i] for i in take])
            row_seeds = np.array([[seeds[i], 0] for i in take], np.int64)
            out = self._sharder(length, n, sampling, eos_id)((ids, row_seeds))[: len(batch)]
            for i, row in zip(batch, out.tolist(), strict=True):
                finish = "length"
                if eos_id is not None and eos_id in row:
                    row, finish = row[: row.index(eos_id)], "eos"
                results[i] = Completion(fitted[i].tolist(), row, finish)
            if on_batch is not None:
                on_batch(len(batch))
        return results  # type: ignore[return-value]


class Progress:
    """Prompts done and prompts/s: Keras' Progbar on a terminal, a line per update in
    logs and pipes (where Progbar's in-place redraw becomes one unreadable line).
    Silent when `enabled` is False (every worker but the chief)."""

    def __init__(self, total: int, enabled: bool = True, unit: str = "prompts") -> None:
        self.total, self.done, self.unit = total, 0, unit
        self.enabled = enabled
        self.start = time.perf_counter()
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = keras.utils.Progbar(total, unit_name=unit, stateful_metrics=[f"{unit}/s"])

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.done, values=[(f"{self.unit}/s", round(self.rate, 2))])
        else:
            line = f"{self.done}/{self.total} {self.unit}  {self.rate:.2f} {self.unit}/s"
            print(line, flush=True)
