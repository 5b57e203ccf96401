"""Decoding speed: greedy generation with the KV cache, prefill included.

Timed end to end as a user sees it (`Generator.generate`: graph-mode prefill,
XLA decode loop, result back in numpy), because that is the number that
decides how long generation takes; the prefill of a short prompt is a small
part of it.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from tfllm.inference.generate import Generator


def random_prompt(batch: int, length: int, vocab_size: int, seed: int = 3) -> np.ndarray:
    """Random prompt ids `[batch, length]`; greedy decoding of them never stops early
    because no end-of-sequence id is given."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, size=(batch, length), dtype=np.int32)


class DecodeBench:
    """Times `Generator.generate` (greedy, no eos) on a fixed batch of prompts."""

    def __init__(self, name: str, model: keras.Model, prompt: np.ndarray, new_tokens: int) -> None:
        self.name = name
        self.generator = Generator(model)  # use_xla=True: the default decode path
        self.prompt = prompt
        self.new_tokens = new_tokens

    def run_once(self) -> float:
        start = time.perf_counter()
        out = self.generator.generate(self.prompt, self.new_tokens, sampler="greedy")
        seconds = time.perf_counter() - start
        if out.shape != (self.prompt.shape[0], self.new_tokens):
            raise AssertionError(f"{self.name}: generated shape {out.shape}")
        return seconds
