"""Running an exported language model in LiteRT: prefill/decode signatures and generation.

The `.tflite` written by `tfllm.export.lm_tflite` holds one set of weights
and these signatures (batch 1, static shapes; the contract in docs/edge.md):

- `prefill` (and `prefill_<n>` for each smaller bucket n):
  `tokens` int32 [1, n] (prompt, right-padded with anything), `length` int32 [1]
  → `logits` float32 [1, V] (at position length-1), `kv_cache`.
- `decode`: `token` int32 [1, 1], `position` int32 [1], `kv_cache`
  → `logits` float32 [1, V], `kv_cache` (the input cache with `position` written).

Each layer's cache is its own tensor `kv_cache_<i>`, float32
[2, 1, num_heads, max_length, head_dim] (axis 0: keys, values), the layout
`GPT.init_cache` gives each layer. Padding positions a prefill writes past
`length` are harmless: a decode step at position p overwrites slot p before
attending, and attends only to slots ≤ p.

`LiteRTGenerator` drives these with `sample_step`, the sampling rule the
Keras decode loop uses, so greedy text is identical to Keras for a float
export and a seed means the same thing on every backend.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.errors import TfllmError
from tfllm.export import litert
from tfllm.inference.generate import fit_prompt, sample_step
from tfllm.inference.sampling import check_sampler_args

_BUCKET = re.compile(r"^prefill(?:_(\d+))?$")


class LiteRTLM:
    """A loaded LM `.tflite`: prefill (smallest fitting bucket) and decode calls."""

    def __init__(self, path: str, num_threads: int | None = None) -> None:
        self.path = path
        self.interpreter = litert.interpreter(path, num_threads)
        signatures = self.interpreter.get_signature_list()
        if "decode" not in signatures or "prefill" not in signatures:
            raise TfllmError(
                f"{path}: not a tfllm language-model export (signatures: {sorted(signatures)}; "
                "need prefill and decode)"
            )
        self._decode = self.interpreter.get_signature_runner("decode")
        self._prefills: dict[int, Any] = {}
        for name in signatures:
            if _BUCKET.match(name):
                runner = self.interpreter.get_signature_runner(name)
                width = int(runner.get_input_details()["tokens"]["shape"][1])
                self._prefills[width] = runner
        self.buckets = sorted(self._prefills)
        self.max_length = self.buckets[-1]
        inputs = self._decode.get_input_details()
        self.cache_names = sorted(
            (n for n in inputs if n.startswith("kv_cache_")), key=lambda n: int(n.split("_")[-1])
        )
        self.cache_shape = tuple(int(d) for d in inputs[self.cache_names[0]]["shape"])

    def empty_cache(self) -> dict[str, np.ndarray]:
        """All-zero per-layer caches (what `prefill` fills)."""
        return {n: np.zeros(self.cache_shape, np.float32) for n in self.cache_names}

    def _split(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return out["logits"][0], {n: out[n] for n in self.cache_names}

    def prefill(
        self, prompt_ids: np.ndarray | list[int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Runs the prompt; returns (logits [V] at its last position, caches)."""
        ids = np.asarray(prompt_ids, np.int32).reshape(-1)
        if not 1 <= len(ids) <= self.max_length:
            raise ValueError(f"prompt length {len(ids)} not in [1, {self.max_length}]")
        width = next(b for b in self.buckets if b >= len(ids))
        tokens = np.zeros([1, width], np.int32)
        tokens[0, : len(ids)] = ids
        return self._split(
            self._prefills[width](tokens=tokens, length=np.array([len(ids)], np.int32))
        )

    def decode(
        self, token: int, position: int, caches: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feeds `token` at `position`; returns (logits [V] for the next position, caches)."""
        return self._split(
            self._decode(
                token=np.array([[token]], np.int32),
                position=np.array([position], np.int32),
                **caches,
            )
        )

    def teacher_forced_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits [len(ids), V] for every position of `ids`, through the decode path.

        Position 0 comes from a one-token prefill, every later one from a
        decode step: exactly the path generation takes, so its perplexity is
        the deployed model's.
        """
        ids = np.asarray(ids, np.int32).reshape(-1)
        logits, cache = self.prefill(ids[:1])
        rows = [logits]
        for position in range(1, len(ids)):
            logits, cache = self.decode(int(ids[position]), position, cache)
            rows.append(logits)
        return np.stack(rows)


class LiteRTGenerator:
    """`Generator.generate`'s contract, run through a LiteRT `.tflite` (batch 1)."""

    def __init__(self, lm: LiteRTLM) -> None:
        self.lm = lm
        self._samplers: dict[tuple[str, int | None], Any] = {}

    def _sampler(self, sampler: str, eos_id: int | None):
        """`sample_step` compiled once per (sampler, eos_id): run eagerly it costs
        more per token than the LiteRT decode step itself."""
        key = (sampler, eos_id)
        if key not in self._samplers:

            def sample(step, logits, done, seed, temperature, top_k, top_p):
                return sample_step(
                    step, logits, done, seed, sampler, temperature, top_k, top_p, eos_id
                )

            self._samplers[key] = tf.function(
                sample,
                input_signature=[
                    tf.TensorSpec([], tf.int32),
                    tf.TensorSpec([1, None], tf.float32),
                    tf.TensorSpec([1], tf.bool),
                    tf.TensorSpec([2], tf.int64),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([], tf.int32),
                    tf.TensorSpec([], tf.float32),
                ],
            )
        return self._samplers[key]

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
        """Continue a prompt `[P]`; returns `[n]` new ids (eos-filled after an eos)."""
        check_sampler_args(sampler, temperature, top_k, top_p, max_new_tokens)
        prompt = np.asarray(prompt_ids, np.int32)
        if prompt.ndim != 1:
            raise ValueError("the LiteRT backend generates for one prompt at a time")
        if prompt.shape[0] == 0:
            raise ValueError("prompt_ids is empty; start from e.g. [eos_id]")
        prompt, max_new_tokens = fit_prompt(prompt, max_new_tokens, self.lm.max_length)
        seed_pair = tf.constant([seed, 0], tf.int64)
        settings = (
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
        )
        sample = self._sampler(sampler, eos_id)
        done = tf.zeros([1], tf.bool)
        logits, cache = self.lm.prefill(prompt)
        out = np.full([max_new_tokens], 0 if eos_id is None else eos_id, np.int32)
        for step in range(max_new_tokens):
            if step:
                logits, cache = self.lm.decode(int(out[step - 1]), len(prompt) + step - 1, cache)
            if sampler == "greedy":
                # sample_step's greedy rule (first index of the max, as tf.argmax),
                # in numpy: calling into TensorFlow per token costs more than
                # the LiteRT decode step of a small model.
                out[step] = int(np.argmax(logits))
                finished = out[step] == eos_id
            else:
                token, done = sample(
                    tf.constant(step, tf.int32), logits[np.newaxis], done, seed_pair, *settings
                )
                out[step] = int(token[0])
                finished = bool(done[0])
            if finished:
                break
        return out
