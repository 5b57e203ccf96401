"""Edge decoding speed: one trained LM through every backend it was exported to.

`tfllm-benchmark --mode=edge --workdir=W` times batch-1 greedy generation of
the same prompt with the Keras checkpoint (XLA decode loop), the SavedModel
(`generate_greedy`) and each `W/export/tflite_<quantize>/model.tflite` found
(LiteRT prefill/decode signatures), interleaved in rounds.

Keras and LiteRT generate exactly `--decode_new_tokens` tokens (eos does not
stop them), so their tokens/s is decode throughput, prefill included. The
SavedModel's endpoint always stops at eos; its token count is the length of
the Keras greedy output up to eos (the export was verified to produce that
exact text), recorded as `tokens` — if the model emits eos early, that row
is dominated by the prefill and says so by its small `tokens`. The
perplexity each TFLite file was verified with comes from its
`verification.json`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tfllm.benchmark.stats import summarize_seconds
from tfllm.benchmark.timing import interleave
from tfllm.errors import WorkdirError
from tfllm.export.litert import QUANTIZE_MODES, tflite_dir, tflite_path
from tfllm.export.verified import load_serving
from tfllm.inference.generate import Generator
from tfllm.inference.lm_tflite_runner import LiteRTGenerator, LiteRTLM
from tfllm.inference.loading import load_trained
from tfllm.utils.io import read_json


def _generated(ids: np.ndarray, eos_id: int) -> int:
    """Decode steps a generation took: up to and including its first eos."""
    hits = np.flatnonzero(ids == eos_id)
    return int(hits[0]) + 1 if hits.size else len(ids)


class _Side:
    def __init__(self, name: str, generate, steps: int | None = None) -> None:
        self.name = name
        self._generate = generate
        self.steps: int | None = steps

    def run_once(self) -> float:
        start = time.perf_counter()
        steps = self._generate()
        seconds = time.perf_counter() - start
        self.steps = self.steps or steps
        return seconds


def run_edge_benchmark(workdir: str, new_tokens: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Tokens/s per backend (batch 1, greedy) and each TFLite file's verified perplexity."""
    import tensorflow as tf

    trained = load_trained(workdir)
    if trained.is_classifier:
        raise WorkdirError(f"--workdir: {workdir} holds a classifier; --mode=edge times LMs")
    tokenizer, eos = trained.tokenizer, trained.tokenizer.eos_id
    prompt_text = str(trained.config.export.verify_prompts[0]) or "\n"
    prompt = np.asarray(tokenizer.encode(prompt_text) or [eos], np.int32)
    new_tokens = min(new_tokens, int(trained.model.max_length) - len(prompt))

    keras_gen = Generator(trained.model)

    def keras_run() -> int:
        return len(keras_gen.generate(prompt, new_tokens))

    sides = [_Side("keras", keras_run)]
    keras_steps = _generated(keras_gen.generate(prompt, new_tokens, eos_id=eos), eos)
    saved_dir = os.path.join(workdir, "export", "saved_model")
    if os.path.isfile(os.path.join(saved_dir, "saved_model.pb")):
        serving = load_serving(saved_dir)
        args = (
            tf.constant([prompt_text]),
            tf.constant(new_tokens),
            tf.constant(1.0),
            tf.constant(0),
            tf.constant(1.0),
            tf.constant(0),
        )
        sides.append(
            _Side("saved_model", lambda: serving.generate_greedy(*args) and None, keras_steps)
        )
    exports: dict[str, Any] = {}
    for mode in QUANTIZE_MODES:
        path = tflite_path(workdir, mode)
        if not os.path.isfile(path):
            continue
        generator = LiteRTGenerator(LiteRTLM(path))

        def litert_run(g: LiteRTGenerator = generator) -> int:
            return len(g.generate(prompt, new_tokens))

        sides.append(_Side(f"litert_{mode}", litert_run))
        record = read_json(os.path.join(tflite_dir(workdir, mode), "verification.json"))
        exports[mode] = {
            k: record.get(k)
            for k in ("size_bytes", "gzip_bytes", "perplexity", "keras_perplexity",
                      "perplexity_increase", "max_abs_diff", "decode_tokens_per_second")
        }  # fmt: skip
    if not exports:
        raise WorkdirError(
            f"--workdir: {workdir} has no TFLite export "
            f"(run tfllm-export --workdir={workdir} --format=tflite [--quantize=dynamic])"
        )
    seconds = interleave(sides, max(1, warmup), repeats, 1)
    backends = {}
    for side in sides:
        stats = summarize_seconds(seconds[side.name], float(side.steps or 1), "decode")
        backends[side.name] = {
            "tokens_per_second": round(stats["decode_tokens_per_second"], 1),
            "ms_per_token_median": round(1e3 * stats["decode_time_median_s"] / side.steps, 3),
            "tokens": side.steps,
            "samples": stats["decode_samples"],
        }
    return {
        "edge": {
            "workdir": workdir,
            "checkpoint": trained.checkpoint,
            "prompt": prompt_text,
            "prompt_tokens": len(prompt),
            "max_new_tokens": new_tokens,
            "batch": 1,
            "sampler": "greedy",
            "backends": backends,
            "tflite_exports": exports,
        }
    }
