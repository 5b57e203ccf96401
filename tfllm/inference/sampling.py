"""Next-token samplers as pure, stateless TensorFlow ops.

We do not use `keras_hub.samplers`: they draw randomness from a stateful
`SeedGenerator` and own the whole generation loop. tfllm needs the opposite:
a seed that is an explicit input (stateless random ops), so one seed gives
the same text eagerly, inside `tf.function`, under XLA and from a reloaded
SavedModel, and a single decode loop (`tfllm.inference.generate`) shared by the
Keras, SavedModel and LiteRT back ends, which only asks "pick one token from
these logits".

All samplers take float32 logits `[B, V]` and return int32 ids `[B]`. The
sampler name is a Python string fixed at trace time; temperature, top_k, top_p
and the seed may be tensors, so changing them never retraces. Every op used
here (sort, cumsum, gather, stateless random bits) compiles under XLA.

Sampling is Gumbel-max over stateless random *integer* bits from the Philox
generator, pinned explicitly (`alg="philox"`, also for the per-step
`stateless_fold_in`): with the default "auto_select", XLA and graph mode pick
different generators, and the same seed gave different text from the XLA
decode loop than from a SavedModel (measured on TF 2.21 CPU). Building the
uniforms from integer bits keeps them exactly representable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from tfllm.config import SAMPLERS
from tfllm.errors import ConfigError

# Float32 slack when comparing cumulative probability mass with top_p, so that
# p=0.8 over probabilities 0.5 + 0.3 counts as reached despite rounding.
_TOP_P_SLACK = 1e-6

TensorLike = float | int | tf.Tensor


def check_sampler_args(
    sampler: str,
    temperature: float,
    top_k: int,
    top_p: float,
    max_new_tokens: int,
) -> None:
    """Raise `ConfigError` (one line naming the flag) for bad sampling flags.

    top_k = 0 means "off" for samplers other than `top_k`. An infinite
    temperature would flatten the logits and sample uniformly (nan: garbage),
    so non-finite values are refused rather than silently "working".
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"--temperature must be > 0 and finite (got {temperature})")
    if top_k < 0 or (sampler == "top_k" and top_k < 1):
        raise ConfigError(f"--top_k must be ≥ 1 for --sampler=top_k (got {top_k})")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top_p must be in (0, 1] (got {top_p})")
    if max_new_tokens < 1:
        raise ConfigError(f"--max_new_tokens must be ≥ 1 (got {max_new_tokens})")


def map_rows(
    fn: Callable[[tf.Tensor], tf.Tensor], rows: tf.Tensor, spec: tf.TensorSpec
) -> tf.Tensor:
    """`tf.map_fn(fn, rows)`, unrolled when the row count is static.

    Unrolled, it is one op per row instead of a TensorList loop, which DTensor
    cannot lay out ("'tf.TensorListStack' op does not implement layout
    propagation", measured): sampling with a seed per row then also runs on a
    tensor-parallel mesh. The result is the same either way.
    """
    if rows.shape[0] is not None:
        return tf.stack([fn(rows[i]) for i in range(rows.shape[0])])
    return tf.map_fn(fn, rows, fn_output_signature=spec)


def _random_bits(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Philox int32 bits shaped like `logits` [B, V], from one seed [2] or one per row [B, 2].

    With a seed per row, row i draws exactly the bits a batch of one with
    `seed[i]` draws (the same Philox stream over V values), so a prompt's
    sample does not depend on which other prompts share its batch.
    """
    if seed.shape.rank == 2:
        vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]

        def row_bits(row_seed: tf.Tensor) -> tf.Tensor:
            return tf.random.stateless_uniform(
                [vocab], seed=row_seed, minval=None, maxval=None, dtype=tf.int32, alg="philox"
            )

        return map_rows(row_bits, seed, tf.TensorSpec([logits.shape[-1]], tf.int32))
    return tf.random.stateless_uniform(
        tf.shape(logits), seed=seed, minval=None, maxval=None, dtype=tf.int32, alg="philox"
    )


def _categorical(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Draw one id per row from softmax(logits) via Gumbel-max; int32 [B].

    The RNG algorithm is pinned to Philox: with the default "auto_select",
    XLA picks a different generator than graph mode, and the same seed would
    give different text from the XLA decode loop and from a SavedModel.
    `seed` is one [2] seed for the batch or one per row, [B, 2].
    """
    bits = _random_bits(logits, seed)
    # 23 random mantissa bits -> uniform in (0, 1), exactly representable.
    mantissa = tf.cast(tf.bitwise.bitwise_and(bits, 0x7FFFFF), tf.float32)
    uniform = (mantissa + 0.5) * (2.0**-23)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)


def _sample_sorted(
    sorted_logits: tf.Tensor, sorted_ids: tf.Tensor, keep: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
    """Sample among the kept entries of descending-sorted logits; map back to ids."""
    masked = tf.where(keep, sorted_logits, -float("inf"))
    return tf.gather(sorted_ids, _categorical(masked, seed), batch_dims=1)


def sample_next(
    logits: tf.Tensor,
    sampler: str,
    temperature: TensorLike = 1.0,
    top_k: TensorLike = 0,
    top_p: TensorLike = 1.0,
    seed: tf.Tensor | tuple[int, int] = (0, 0),
) -> tf.Tensor:
    """Pick one token per row of `logits` [B, V]; returns int32 [B].

    - greedy: argmax (ignores temperature and seed).
    - temperature: sample from softmax(logits / temperature).
    - top_k: keep the `top_k` largest scaled logits, then sample.
    - top_p: nucleus sampling; keep the smallest set of most probable tokens
      whose mass is ≥ `top_p` (always at least one), renormalise, sample.

    `seed` is a shape-[2] int32/int64 tensor, or `[B, 2]` (one seed per row);
    equal seeds give equal draws.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    if sampler == "greedy":
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    seed = tf.convert_to_tensor(seed)
    logits = logits / tf.cast(temperature, tf.float32)
    if sampler == "temperature":
        return _categorical(logits, seed)

    sorted_ids = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    sorted_logits = tf.gather(logits, sorted_ids, batch_dims=1)
    rank = tf.range(tf.shape(logits)[-1])[tf.newaxis, :]
    if sampler == "top_k":
        keep = rank < tf.cast(top_k, tf.int32)
    else:
        probs = tf.nn.softmax(sorted_logits, axis=-1)
        mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
        threshold = tf.cast(top_p, tf.float32) - _TOP_P_SLACK
        keep = tf.logical_or(mass_before < threshold, rank == 0)
    return _sample_sorted(sorted_logits, sorted_ids, keep, seed)


def sample_rows(
    logits: tf.Tensor,
    samplers: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    top_p: tf.Tensor,
    seeds: tf.Tensor,
) -> tf.Tensor:
    """`sample_next` with a sampler and settings per row; returns int32 [B].

    `samplers` [B] int32 indexes `SAMPLERS`; `temperature`, `top_k`, `top_p`
    are [B], `seeds` [B, 2]. Row i picks exactly what `sample_next` picks for
    that row alone with `SAMPLERS[samplers[i]]` and `seeds[i]` (the same ops
    per row, the same Philox bits), so requests with different settings share
    one batch of a server and still give `tfllm-generate`'s text. The sort
    that top-k / top-p need runs only when some row uses one of them.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    samplers = tf.cast(samplers, tf.int32)
    greedy_rows = tf.equal(samplers, SAMPLERS.index("greedy"))
    # A greedy row's temperature is unused (and may be 0): keep its other draws finite.
    temperature = tf.where(greedy_rows, 1.0, tf.cast(temperature, tf.float32))
    scaled = logits / temperature[:, tf.newaxis]
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    # The Gumbel draw only when some row samples (an all-greedy batch skips it).
    free = tf.cond(tf.reduce_all(greedy_rows), lambda: greedy, lambda: _categorical(scaled, seeds))

    def truncated() -> tf.Tensor:
        sorted_ids = tf.argsort(scaled, axis=-1, direction="DESCENDING", stable=True)
        sorted_logits = tf.gather(scaled, sorted_ids, batch_dims=1)
        rank = tf.range(tf.shape(scaled)[-1])[tf.newaxis, :]
        keep_k = rank < tf.cast(top_k, tf.int32)[:, tf.newaxis]
        mass_before = tf.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1, exclusive=True)
        threshold = tf.cast(top_p, tf.float32)[:, tf.newaxis] - _TOP_P_SLACK
        keep_p = tf.logical_or(mass_before < threshold, rank == 0)
        top_k_rows = tf.equal(samplers, SAMPLERS.index("top_k"))[:, tf.newaxis]
        return _sample_sorted(
            sorted_logits, sorted_ids, tf.where(top_k_rows, keep_k, keep_p), seeds
        )

    sorted_rows = tf.logical_or(
        tf.equal(samplers, SAMPLERS.index("top_k")), tf.equal(samplers, SAMPLERS.index("top_p"))
    )
    needs_sort = tf.reduce_any(sorted_rows)
    picked = tf.cond(needs_sort, truncated, lambda: free)
    picked = tf.where(tf.equal(samplers, SAMPLERS.index("temperature")), free, picked)
    return tf.where(greedy_rows, greedy, picked)
