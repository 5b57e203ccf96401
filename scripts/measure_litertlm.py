"""Decode speed and perplexity of one LM through every edge runtime it was exported to.

    tfllm-export --workdir=W --format=litertlm [--quantize=int8|int4|dynamic]
    tfllm-export --workdir=W --format=tflite            # optional: the Python LiteRT loop
    python scripts/measure_litertlm.py --workdir=W [--gguf=model.gguf] \\
        --output=docs/measurements/litertlm_<name>.json

Why: issue 27 asks whether Google's LiteRT-LM engine running tfllm's
`.litertlm` decodes at least 2x faster than the Keras model with XLA, and how
far the quantized bundles are from float in size and perplexity.

What is measured, batch 1, greedy, one process, every runtime on the same
prompt (the first Tiny Shakespeare training speech with at least
`--prompt_tokens` tokens, cut to exactly that many):

* **Runtimes.** `keras_xla`: the checkpoint through `tfllm.inference.generate.
  Generator` (graph prefill + XLA decode loop, what `tfllm-generate` runs).
  `litert_<q>`: `W/export/tflite_<q>/model.tflite` through tfllm's Python
  LiteRT loop (`--backend=litert`). `litertlm_<q>`: `W/export/litertlm_<q>/
  model.litertlm` in `litert_lm.Engine` (CPU, the thread count below), one
  session per call, prompt given as text. `llamacpp`: llama.cpp on `--gguf`
  (scripts/bench_pretrained_decode.py's engine), when given.
* **What is timed.** Per runtime and round: the wall time of a call that
  generates 1 token (prefill + first token), then of one that generates N.
  Decode tokens/s = (N - 1) / (t_N - t_1), the median over rounds; the order
  of the runtimes rotates by one per round and each call follows a 0.3 s
  pause. The engine's own counter (`last_decode_tokens_per_second`) is
  recorded beside it. No runtime stops at a stop token (LiteRT-LM does; its
  decoded token count is recorded, and the rate uses it).
* **Perplexity.** The first `--ppl_windows` windows of `--ppl_len` + 1 ids of
  Tiny Shakespeare's validation split: Keras' full forward pass, and each
  `.litertlm`'s `.tflite` teacher-forced through its `decode` signature in
  LiteRT's interpreter (the engine returns only text).
* **Context.** `os.getloadavg()` at the start and the end (the machine is
  shared), CPU model, versions, the command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ("none", "dynamic", "int8", "int4")


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, targets[:, None], -1).sum())


def shakespeare(split: str) -> str:
    """Tiny Shakespeare's training (first 90 % by characters) or validation (last 10 %)
    part, as scripts/bench_pretrained_decode.py splits it."""
    import gzip

    from tfllm.data.corpus import bundled_paths

    with gzip.open(bundled_paths("shakespeare")["train"], "rt", encoding="utf-8") as f:
        text = f.read()
    cut = len(text) - round(len(text) * 0.1)
    return text[:cut] if split == "train" else text[cut:]


def prompt_ids(tokenizer, n: int) -> list[int]:
    for speech in shakespeare("train").split("\n\n"):
        ids = tokenizer.encode(speech)
        if len(ids) >= n:
            return ids[:n]
    raise SystemExit(f"--prompt_tokens: no training speech has {n} tokens")


class Runtime:
    """generate(n) runs prompt + n new tokens; returns how many were decoded."""

    def __init__(self, name: str, generate: Callable[[int], int]) -> None:
        self.name, self.generate = name, generate
        self.engine_rates: list[float] = []


def keras_runtime(trained, ids: list[int]) -> Runtime:
    from tfllm.inference.generate import Generator

    generator = Generator(trained.model)
    return Runtime("keras_xla", lambda n: len(generator.generate(ids, n)))


def litert_runtime(path: str, mode: str, ids: list[int]) -> Runtime:
    from tfllm.inference.lm_tflite_runner import LiteRTGenerator, LiteRTLM

    generator = LiteRTGenerator(LiteRTLM(path))
    return Runtime(f"litert_{mode}", lambda n: len(generator.generate(ids, n)))


def litertlm_runtime(path: str, mode: str, text: str, threads: int) -> tuple[Runtime, Any]:
    from tfllm.inference.litertlm_runner import LiteRTLMEngine

    engine = LiteRTLMEngine(path, num_threads=threads)
    runtime = Runtime(f"litertlm_{mode}", lambda n: 0)

    def generate(n: int) -> int:
        turn = engine.turns([text], n)[0]
        if n > 1 and turn.decode_tokens_per_second:
            runtime.engine_rates.append(turn.decode_tokens_per_second)
        return turn.decode_tokens

    runtime.generate = generate
    return runtime, engine


def llamacpp_runtime(gguf: str, ids: list[int], threads: int) -> Runtime:
    from bench_pretrained_decode import LlamaCppEngine

    engine = LlamaCppEngine(gguf, threads)
    prompts = np.asarray([ids], np.int32)
    return Runtime("llamacpp", lambda n: int(engine.generate(prompts, n).shape[1]))


def time_rounds(runtimes: list[Runtime], new_tokens: int, rounds: int, pause: float) -> dict:
    for rt in runtimes:  # warm-up: tracing, XLA for both lengths, weight caches
        rt.generate(1)
        rt.generate(new_tokens)
    rates: dict[str, list[float]] = {rt.name: [] for rt in runtimes}
    tokens: dict[str, int] = {}
    for r in range(rounds):
        for rt in runtimes[r % len(runtimes) :] + runtimes[: r % len(runtimes)]:
            time.sleep(pause)
            start = time.perf_counter()
            rt.generate(1)
            first = time.perf_counter() - start
            time.sleep(pause)
            start = time.perf_counter()
            n = rt.generate(new_tokens) or new_tokens
            total = time.perf_counter() - start
            tokens[rt.name] = n
            if total > first:  # else the difference is below the timer's noise: no sample
                rates[rt.name].append((n - 1) / (total - first))
    out = {}
    for rt in runtimes:
        samples = rates[rt.name]
        out[rt.name] = {
            "decode_tokens_per_second_median": round(statistics.median(samples), 2)
            if samples
            else None,
            "per_round": [round(x, 2) for x in rates[rt.name]],
            "new_tokens": tokens[rt.name],
        }
        if rt.engine_rates:
            out[rt.name]["engine_counter_tokens_per_second_median"] = round(
                statistics.median(rt.engine_rates[-rounds:]), 2
            )
    return out


def perplexities(trained, paths: dict[str, str], windows: int, length: int) -> dict:
    import litert_lm_builder
    import tensorflow as tf

    from tfllm.export.litertlm_model import ContractLM

    ids = np.asarray(trained.tokenizer.encode(shakespeare("validation")), np.int32)
    rows = [ids[k * length : k * length + length + 1] for k in range(windows)]
    keras_nll = sum(
        log_softmax_nll(trained.model(tf.constant(w[None, :-1]), training=False)[0].numpy(), w[1:])
        for w in rows
    )
    count = windows * length
    out = {"windows": windows, "window_tokens": length, "keras": math.exp(keras_nll / count)}
    for mode, path in paths.items():
        with tempfile.TemporaryDirectory() as scratch:
            litert_lm_builder.unpack_litertlm_file(path, scratch)
            tflite = next(
                os.path.join(root, f)
                for root, _, files in os.walk(scratch)
                for f in files
                if f.endswith(".tflite")
            )
            lm = ContractLM(tflite)
            nll = sum(log_softmax_nll(lm.teacher_forced_logits(w[:-1]), w[1:]) for w in rows)
        out[f"litertlm_{mode}"] = math.exp(nll / count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--prompt_tokens", type=int, default=56)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ppl_windows", type=int, default=4, help="0: speed only")
    parser.add_argument("--ppl_len", type=int, default=512)
    parser.add_argument("--pause", type=float, default=0.3)
    args = parser.parse_args()

    from tfllm.export.litert import tflite_path
    from tfllm.inference.litertlm_runner import litertlm_dir, litertlm_path
    from tfllm.inference.loading import load_trained
    from tfllm.utils.machine import cpu_model

    load_start = os.getloadavg()
    trained = load_trained(args.workdir)
    ids = prompt_ids(trained.tokenizer, args.prompt_tokens)
    text = trained.tokenizer.decode(ids)
    new_tokens = min(args.new_tokens, int(trained.model.max_length) - len(ids) - 1)
    runtimes = [keras_runtime(trained, ids)]
    engines, bundles, files = [], {}, {}
    for mode in MODES:
        if os.path.isfile(tflite_path(args.workdir, mode)):
            runtimes.append(litert_runtime(tflite_path(args.workdir, mode), mode, ids))
        path = litertlm_path(args.workdir, mode)
        if os.path.isfile(path):
            runtime, engine = litertlm_runtime(path, mode, text, args.threads)
            runtimes.append(runtime)
            engines.append(engine)
            bundles[mode] = path
            with open(os.path.join(litertlm_dir(args.workdir, mode), "verification.json")) as f:
                record = json.load(f)
            files[mode] = {
                k: record.get(k)
                for k in ("size_bytes", "tflite_bytes", "perplexity", "keras_perplexity",
                          "perplexity_increase", "max_abs_diff", "greedy_identical",
                          "weight_bits", "granularity")
            }  # fmt: skip
    if args.gguf:
        runtimes.append(llamacpp_runtime(args.gguf, ids, args.threads))
    speed = time_rounds(runtimes, new_tokens, args.rounds, args.pause)
    for engine in engines:
        engine.close()
    ppl = perplexities(trained, bundles, args.ppl_windows, args.ppl_len) if args.ppl_windows else {}
    float_size = (files.get("none") or {}).get("size_bytes")
    for mode, info in files.items():
        info["size_vs_float"] = round(info["size_bytes"] / float_size, 3) if float_size else None
        if f"litertlm_{mode}" in ppl:
            info["tiny_shakespeare_val_perplexity"] = ppl[f"litertlm_{mode}"]
            info["val_perplexity_vs_keras"] = ppl[f"litertlm_{mode}"] / ppl["keras"] - 1
    keras_rate = speed["keras_xla"]["decode_tokens_per_second_median"]
    for row in speed.values():
        rate = row["decode_tokens_per_second_median"]
        row["vs_keras_xla"] = round(rate / keras_rate, 2) if rate and keras_rate else None
    from importlib.metadata import version

    result = {
        "what": "batch-1 greedy decode tokens/s per edge runtime, and .litertlm size/perplexity "
        "(scripts/measure_litertlm.py; the docstring says exactly what is timed)",
        "command": "python " + " ".join(sys.argv),
        "workdir": args.workdir,
        "model": dict(trained.config.model),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "machine": {
            "cpu_model": cpu_model(),
            "os_cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "threads": args.threads,
        },  # fmt: skip
        "versions": {
            p: version(p)
            for p in (
                "tensorflow",
                "keras",
                "ai-edge-litert",
                "litert-lm-api",
                "litert-lm-builder",
                "litert-quantizer",
                "llama_cpp_python",
            )
        },  # fmt: skip
        "git_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),  # fmt: skip
        "prompt_tokens": len(ids),
        "new_tokens": new_tokens,
        "rounds": args.rounds,
        "decode": speed,
        "files": files,
        "perplexity": ppl,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(json.dumps({"decode": {k: v["decode_tokens_per_second_median"] for k, v in speed.items()},
                      "files": files, "perplexity": ppl}, indent=1, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
