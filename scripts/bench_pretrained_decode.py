"""Decode speed and perplexity of a real pretrained LM: tfllm vs transformers vs llama.cpp.

    tfllm-import --source=SmolLM2-135M-Instruct.Q4_1.gguf --workdir=/tmp/bench_smol
    python scripts/bench_pretrained_decode.py --workdir=/tmp/bench_smol \\
        --gguf=SmolLM2-135M-Instruct.Q4_1.gguf --output=docs/measurements/smollm2_decode.json

Why: the toolkit's own benchmarks (`tfllm-benchmark`) time random-weight GPTs
against keras-hub. This one times the model people actually run — an
imported SmolLM2-135M-Instruct — against the two implementations they would
otherwise use on a CPU, and against what the memory bus allows.

What is measured, in one process, on the same token ids for every engine:

* **Engines.** `tfllm`: the imported `tfllm.models.Llama` in float32 through
  `tfllm.inference.generate.Generator` (graph prefill + XLA decode loop).
  `tfllm_int8`: the same model after `tfllm.models.quantized.quantize_in_place(
  model, "int8")` — what tfllm's `quantize` compress method does, i.e. Keras 3's
  default `model.quantize("int8")`: int8 kernels with per-channel scales, the
  activations quantized to int8 per token on the fly (W8A8), the tied
  embedding/LM head left in float32 (Keras skips keras-hub's
  `ReversibleEmbedding`). `tfllm_int8_wo`: Keras' weight-only int8
  (`Int8QuantizationConfig(activation_quantizer=None)`): float activations,
  int8 kernels. `transformers`: `AutoModelForCausalLM.from_pretrained(dir,
  gguf_file=..., dtype=float32)` (the GGUF dequantized to float32) and its
  `generate(do_sample=False)`. `llamacpp`: llama.cpp (llama-cpp-python's
  low-level API, so batch 8 is 8 sequences in one `llama_decode`) on the GGUF
  itself (Q4_1 weights), greedy = argmax of its logits in NumPy.
* **Prompts.** The first 8 speeches of Tiny Shakespeare's training part (90 %)
  with at least `--prompt_tokens` tokens, each cut to exactly that many tokens
  (the model's tokenizer), so no row is padded. Batch 1 is the first speech;
  batch 8 is the 8 different speeches. No stop token: every engine produces
  exactly `--new_tokens` tokens per row.
* **What is timed.** Per engine, batch size and round: the wall time of one
  generate call for prompt + 1 new token (prefill and the first token,
  `prefill_s`), then of one call for prompt + N new tokens (`total_s`), back to
  back. Decode time = `total_s - prefill_s`, i.e. the N - 1 single-token steps;
  decode tokens/s = B × (N - 1) / decode time. The same rule for every engine.
  `end_to_end_tokens_per_second` = B × N / `total_s`. Warm-up (tracing, XLA
  compilation for both cache shapes, first-touch allocation) runs once per
  engine and batch size before the timed rounds and is discarded.
* **Rounds.** `--rounds` rounds; in each, every engine runs once per batch size,
  the engines' order rotated by one per round (the `--engines` order in round
  0, starting from the second in round 1, ...), so load from other processes
  on this shared machine lands on every engine. Each timed call follows a
  `--pause` sleep (0.3 s), so the thread pools of the engine before (TensorFlow's,
  torch's and llama.cpp's OpenMP, all in this process) have stopped spinning.
  Medians are over rounds (tokens/s: the median of per-round rates, as
  `tfllm.benchmark.stats`).
* **Bound.** Decode of one step reads every weight once (the tied embedding
  as the LM head), so tokens/s ≤ B × read bandwidth / weight bytes. Read
  bandwidth: median seconds of `np.sum` over a 1 GiB float32 array (one
  thread, and two threads summing a half each), at the start and at the end;
  the bound uses the highest of the four medians. KV-cache reads are left
  out of the bound (`kv_cache_bytes_per_step`, the positions a step must
  read, is recorded beside it: about 1 % of the float32 weights at batch 1,
  8 % at batch 8; `bandwidth_bound_with_kv_tokens_per_second` counts them).
* **Perplexity.** Tiny Shakespeare's validation split (the last 10 % of
  `input.txt` by characters) tokenized with tfllm's tokenizer; the first
  `--ppl_windows` windows of `--ppl_len` + 1 ids (non-overlapping inputs,
  `--ppl_len` predictions each), the same ids fed to every engine.
* **Greedy agreement.** The first 32 greedy tokens at batch 1 of every
  engine against transformers'.

Threads: `--threads` (2) for TensorFlow (intra-op), torch and llama.cpp.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol
from unittest import mock

import numpy as np

from tfllm.utils.machine import cpu_model

ALL_ENGINES = ("tfllm", "transformers", "llamacpp", "tfllm_int8", "tfllm_int8_wo")
GREEDY_COMPARE = 32


# ---------------------------------------------------------------- helpers


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of `targets` [T] under `logits` [T, V] (float64)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    return float((log_z - logits[np.arange(len(targets)), targets]).sum())


def read_bandwidth(gib: float = 1.0, repeats: int = 9, warmup: int = 3) -> dict[str, Any]:
    """Memory read bandwidth: `np.sum` over a `gib` GiB float32 array, median of `repeats`.

    Timed with one thread (`array.sum()`) and with two (each half summed in its
    own thread; NumPy releases the GIL in the reduction), interleaved, after
    `warmup` passes of each: on this VM the first passes over a fresh array
    run at about two thirds of the later speed.
    """
    from concurrent.futures import ThreadPoolExecutor

    array = np.ones(int(gib * 2**30) // 4, np.float32)
    halves = np.array_split(array, 2)
    seconds: dict[str, list[float]] = {"1_thread": [], "2_threads": []}
    with ThreadPoolExecutor(2) as pool:
        runs = {
            "1_thread": array.sum,
            "2_threads": lambda: list(pool.map(np.sum, halves)),
        }
        for index in range(warmup + repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if index >= warmup:
                    seconds[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {
        "bytes": int(array.nbytes),
        "method": f"float32 array of {gib} GiB, np.sum, {warmup} warm-up passes then "
        f"{repeats} timed, 1 thread and 2 threads (halves) interleaved",
    }
    for name, times in seconds.items():
        out[f"seconds_{name}"] = times
        out[f"gb_per_s_median_{name}"] = array.nbytes / statistics.median(times) / 1e9
    out["gb_per_s_median"] = max(out["gb_per_s_median_1_thread"], out["gb_per_s_median_2_threads"])
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def shakespeare_prompts(
    text: str, encode: Callable[[str], list[int]], length: int, count: int
) -> list[list[int]]:
    """The first `count` speeches (blank-line separated) of `text` with ≥ `length` ids, cut."""
    prompts = []
    for speech in text.split("\n\n"):
        ids = encode(speech.strip() + "\n")
        if len(ids) >= length:
            prompts.append(ids[:length])
            if len(prompts) == count:
                return prompts
    raise ValueError(f"fewer than {count} speeches of {length} tokens")


# ---------------------------------------------------------------- engines


class Engine(Protocol):
    name: str
    description: str
    weight_bytes: int

    def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuation of `prompts` [B, P]: `[B, new_tokens]` int ids."""
        ...

    def window_nll(self, ids: np.ndarray) -> float:
        """Summed NLL of `ids[1:]` given `ids[:-1]` (one window)."""
        ...


class TfllmEngine:
    """tfllm's Llama through `Generator` (XLA decode loop), float32 or Keras int8."""

    def __init__(self, name: str, workdir: str, quantize: str | None) -> None:
        import keras

        from tfllm.inference.generate import Generator
        from tfllm.inference.loading import load_trained
        from tfllm.models.quantized import quantize_in_place, weight_bytes

        self.name = name
        trained = load_trained(workdir)
        self.model = trained.model
        self.tokenizer = trained.tokenizer
        # Keras' Layer.__delattr__ runs gc.collect() for every kernel it swaps
        # (210 here, ~0.35 s each with TensorFlow's heap): skipped while
        # quantizing, collected once after; the quantized weights are the same.
        with mock.patch.object(gc, "collect", lambda *args, **kwargs: 0):
            if quantize == "int8":
                quantize_in_place(self.model, "int8")
            elif quantize == "int8_weight_only":
                config = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*does not have a `quantize`.*")
                    self.model.quantize("int8", config=config)
        gc.collect()
        self.weight_bytes = weight_bytes(self.model)
        self.generator = Generator(self.model, use_xla=True)
        kinds = {
            None: "float32",
            "int8": "Keras int8 (tfllm quantize_in_place: int8 kernels, dynamic int8 "
            "activations; tied embedding/LM head float32)",
            "int8_weight_only": "Keras int8 weight-only (float activations; tied "
            "embedding/LM head float32)",
        }
        self.description = (
            f"tfllm Llama, {kinds[quantize]}, Generator(use_xla=True).generate(sampler='greedy')"
        )
        self._forward = None

    def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        return self.generator.generate(prompts, new_tokens, sampler="greedy", eos_id=None)

    def window_nll(self, ids: np.ndarray) -> float:
        import tensorflow as tf

        if self._forward is None:
            self._forward = tf.function(lambda x: self.model(x, training=False))
        logits = self._forward(tf.constant(ids[None, :-1], tf.int32))[0].numpy()
        return nll_sum(logits, ids[1:])


class TransformersEngine:
    """Hugging Face transformers on the GGUF dequantized to float32."""

    def __init__(self, gguf: str, threads: int) -> None:
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        self.name = "transformers"
        directory, file = os.path.split(os.path.abspath(gguf))
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=file, dtype=torch.float32
        ).eval()
        self.model.generation_config.eos_token_id = None
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=file)
        params = {id(p): p for p in self.model.parameters()}  # a tied embedding once
        self.weight_bytes = int(sum(p.numel() * p.element_size() for p in params.values()))
        self.description = (
            f"transformers {transformers.__version__} AutoModelForCausalLM.from_pretrained("
            "gguf_file=..., dtype=float32).generate(do_sample=False), "
            f"torch {torch.__version__}, torch.set_num_threads({threads})"
        )

    def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        ids = self.torch.from_numpy(np.asarray(prompts, np.int64))
        with self.torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=self.torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].numpy()

    def window_nll(self, ids: np.ndarray) -> float:
        with self.torch.inference_mode():
            logits = self.model(self.torch.from_numpy(np.asarray(ids[None, :-1], np.int64)))
        return nll_sum(logits.logits[0].float().numpy(), ids[1:])


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's low-level C API (batched sequences)."""

    def __init__(self, gguf: str, threads: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.name = "llamacpp"
        self.threads = threads
        # Keep llama.cpp's log lines off stderr (the callback must outlive the model).
        self._log = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(self._log, None)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            gguf.encode(), llama_cpp.llama_model_default_params()
        )
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.contexts: dict[tuple[int, int, int], Any] = {}
        self.batches: dict[int, Any] = {}
        try:
            import gguf as gguf_lib

            reader = gguf_lib.GGUFReader(gguf)
            self.weight_bytes = int(sum(int(t.n_bytes) for t in reader.tensors))
            types = sorted({t.tensor_type.name for t in reader.tensors})
        except Exception as error:  # only the byte count is lost
            self.weight_bytes = os.path.getsize(gguf)
            types = [f"unknown ({error})"]
        system = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        self.description = (
            f"llama-cpp-python {llama_cpp.__version__} (llama.cpp built from its sdist), "
            f"GGUF tensors {types}, n_threads={threads}, default flash-attention setting, "
            f"one llama_decode per step for all rows, argmax in NumPy; system: {system}"
        )

    def _context(self, seqs: int, per_seq: int, batch: int) -> Any:
        key = (seqs, per_seq, batch)
        if key not in self.contexts:
            params = self.lib.llama_context_default_params()
            params.n_ctx = seqs * per_seq
            params.n_seq_max = seqs
            params.n_batch = batch
            params.n_ubatch = min(batch, 512)
            params.n_threads = self.threads
            params.n_threads_batch = self.threads
            params.kv_unified = False  # one KV stream per sequence, as batch decoding wants
            params.no_perf = True
            ctx = self.lib.llama_init_from_model(self.model, params)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not make a context for {key}")
            self.contexts[key] = ctx
        return self.contexts[key]

    def _batch(self, capacity: int) -> Any:
        if capacity not in self.batches:
            self.batches[capacity] = self.lib.llama_batch_init(capacity, 0, 1)
        return self.batches[capacity]

    def _decode(self, ctx: Any, batch: Any, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One `llama_decode` of (token, position, sequence, wants_logits) rows; their logits."""
        for i, (token, position, seq, wanted) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if wanted else 0
        batch.n_tokens = len(rows)
        status = self.lib.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        n_out = sum(1 for row in rows if row[3])
        pointer = self.lib.llama_get_logits(ctx)
        return np.ctypeslib.as_array(pointer, shape=(n_out, self.n_vocab))

    def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        prompts = np.asarray(prompts)
        rows_n, length = prompts.shape
        per_seq = -(-(length + new_tokens) // 256) * 256
        capacity = max(512, rows_n * length)
        ctx = self._context(rows_n, per_seq, capacity)
        batch = self._batch(capacity)
        self.lib.llama_memory_clear(self.lib.llama_get_memory(ctx), True)
        rows = [
            (int(prompts[s, i]), i, s, i == length - 1)
            for s in range(rows_n)
            for i in range(length)
        ]
        token = self._decode(ctx, batch, rows).argmax(axis=-1)
        out = np.zeros([rows_n, new_tokens], np.int64)
        out[:, 0] = token
        for step in range(1, new_tokens):
            rows = [(int(token[s]), length + step - 1, s, True) for s in range(rows_n)]
            token = self._decode(ctx, batch, rows).argmax(axis=-1)
            out[:, step] = token
        return out

    def window_nll(self, ids: np.ndarray) -> float:
        n = len(ids) - 1
        capacity = -(-n // 512) * 512
        ctx = self._context(1, capacity, capacity)
        self.lib.llama_memory_clear(self.lib.llama_get_memory(ctx), True)
        rows = [(int(t), i, 0, True) for i, t in enumerate(ids[:-1])]
        logits = self._decode(ctx, self._batch(capacity), rows)
        return nll_sum(logits, ids[1:])


# ---------------------------------------------------------------- the run


def build_engine(name: str, args: argparse.Namespace) -> Engine:
    if name == "tfllm":
        return TfllmEngine(name, args.workdir, None)
    if name == "tfllm_int8":
        return TfllmEngine(name, args.workdir, "int8")
    if name == "tfllm_int8_wo":
        return TfllmEngine(name, args.workdir, "int8_weight_only")
    if name == "transformers":
        return TransformersEngine(args.gguf, args.threads)
    if name == "llamacpp":
        return LlamaCppEngine(args.gguf, args.threads)
    raise ValueError(f"unknown engine {name!r}; choose from {ALL_ENGINES}")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for module in (
        "tensorflow", "keras", "keras_hub", "numpy", "torch", "transformers", "llama_cpp", "gguf"
    ):  # fmt: skip
        try:
            out[module] = getattr(__import__(module), "__version__", "installed, no __version__")
        except ImportError:
            out[module] = None
    return out


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def summarize(
    batch: int, new_tokens: int, prefill: list[float], total: list[float]
) -> dict[str, Any]:
    from tfllm.benchmark.stats import summarize_seconds

    decode = [t - p for p, t in zip(prefill, total, strict=True)]
    out: dict[str, Any] = {
        "prefill_s": prefill,
        "total_s": total,
        "decode_s": decode,
        "prefill_median_s": statistics.median(prefill),
        "total_median_s": statistics.median(total),
    }
    out.update(summarize_seconds(decode, batch * (new_tokens - 1), "decode"))
    # The fastest round: the least disturbed by other processes on a shared machine.
    out["decode_tokens_per_second_best_round"] = batch * (new_tokens - 1) / min(decode)
    out.update(summarize_seconds(total, batch * new_tokens, "end_to_end"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a tfllm-import'ed SmolLM2 workdir")
    parser.add_argument("--gguf", required=True, help="the GGUF the workdir was imported from")
    parser.add_argument("--output", default="docs/measurements/smollm2_decode.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--prompt_tokens", type=int, default=56)
    parser.add_argument("--engines", default=",".join(ALL_ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pause", type=float, default=0.3, help="seconds of sleep before each timed call"
    )
    parser.add_argument(
        "--data", default=os.path.join("..", "shared", "data", "tinyshakespeare", "input.txt")
    )
    parser.add_argument("--ppl_windows", type=int, default=4)
    parser.add_argument("--ppl_len", type=int, default=512)
    args = parser.parse_args()

    wall_start = time.time()
    load_start = os.getloadavg()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    names = [n for n in args.engines.split(",") if n]
    for name in names:
        if name not in ALL_ENGINES:
            parser.error(f"--engines: unknown {name!r}; choose from {ALL_ENGINES}")
    result: dict[str, Any] = {
        "what": "SmolLM2 greedy decode tokens/s and perplexity: tfllm vs transformers vs "
        "llama.cpp, against the memory-bandwidth bound (scripts/bench_pretrained_decode.py; "
        "the module docstring says exactly what is timed)",
        "command": "python " + shlex.join(sys.argv),
        "timed": "per engine, batch size and round: wall time of generate(prompt, 1 new token) "
        "(prefill_s), then of generate(prompt, N new tokens) (total_s); decode_s = total_s - "
        "prefill_s covers the N - 1 single-token steps; decode tokens/s = B*(N-1)/decode_s "
        "(median of per-round rates); end_to_end tokens/s = B*N/total_s",
        "shared_machine": "other agents used this machine's 2 cores during the run; see the "
        "load averages (1, 5, 15 min) at start and end",
        "load_average_start": list(load_start),
        "machine": {
            "cpu_model": cpu_model(),
            "os_cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "threads_per_engine": args.threads,
        },
        "versions": versions(),
        "tfllm_git_commit": git_commit(),
        "settings": {
            "rounds": args.rounds,
            "new_tokens": args.new_tokens,
            "batch_sizes": batch_sizes,
            "prompt_tokens": args.prompt_tokens,
            "engines": names,
            "ppl_windows": args.ppl_windows,
            "ppl_len": args.ppl_len,
            "pause_s": args.pause,
        },
        "failures": {},
    }
    print(f"load average at start: {load_start}", file=sys.stderr)
    result["bandwidth_start"] = read_bandwidth()
    print(
        f"read bandwidth {result['bandwidth_start']['gb_per_s_median']:.1f} GB/s", file=sys.stderr
    )

    # Data: prompts from the training 90 %, perplexity windows from the last 10 %.
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    n_val = round(len(text) * 0.1)
    engines: dict[str, Engine] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            engines[name] = build_engine(name, args)
            print(f"{name}: loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        except Exception as error:  # recorded; the other engines still run
            result["failures"][name] = f"load: {type(error).__name__}: {error}"
            print(f"{name}: FAILED to load: {error}", file=sys.stderr)
    tokenizer_engine = next((e for e in engines.values() if isinstance(e, TfllmEngine)), None)
    if tokenizer_engine is None:
        from tfllm.inference.loading import load_trained

        encode = load_trained(args.workdir).tokenizer.encode
    else:
        encode = tokenizer_engine.tokenizer.encode
    max_batch = max(batch_sizes)
    prompt_list = shakespeare_prompts(text[: len(text) - n_val], encode, args.prompt_tokens, 8)
    prompts_all = np.array([prompt_list[i % len(prompt_list)] for i in range(max_batch)], np.int32)
    val_ids = np.array(encode(text[len(text) - n_val :]), np.int32)
    windows = [
        val_ids[i * args.ppl_len : i * args.ppl_len + args.ppl_len + 1]
        for i in range(args.ppl_windows)
    ]
    result["prompts"] = {
        "source": f"{args.data}: the first 8 blank-line-separated speeches of the first 90 % "
        f"with >= {args.prompt_tokens} tokens, each cut to {args.prompt_tokens} tokens; "
        "batch 1 = speech 0; batch 8 = speeches 0..7 (8 different prompts, same length, no "
        "padding); larger batches cycle through the 8",
        "ids": [p for p in prompt_list],
        "text": [None] * len(prompt_list),
    }
    if tokenizer_engine is not None:
        result["prompts"]["text"] = [tokenizer_engine.tokenizer.decode(p) for p in prompt_list]
    result["perplexity_data"] = {
        "source": f"{args.data}: last 10 % by characters ({n_val:,} chars), tfllm's tokenizer "
        f"({len(val_ids):,} ids); windows ids[i*{args.ppl_len} : i*{args.ppl_len} + "
        f"{args.ppl_len} + 1], i < {args.ppl_windows}; {args.ppl_len} predictions each",
        "predicted_tokens": int(sum(len(w) - 1 for w in windows)),
    }
    hf = engines.get("transformers")
    if isinstance(hf, TransformersEngine):
        hf_ids = hf.tokenizer(text[len(text) - n_val :], add_special_tokens=False)["input_ids"]
        agree = list(hf_ids) == val_ids.tolist()
        result["perplexity_data"]["transformers_tokenizer_gives_same_ids"] = agree
        first = common_prefix(list(hf_ids), val_ids.tolist())
        result["perplexity_data"]["transformers_tokenizer_common_prefix"] = first

    # Perplexity (before timing: it also warms each engine's full forward pass).
    perplexity: dict[str, float] = {}
    for name, engine in list(engines.items()):
        t0 = time.perf_counter()
        try:
            total = sum(engine.window_nll(w) for w in windows)
            perplexity[name] = float(np.exp(total / result["perplexity_data"]["predicted_tokens"]))
            print(f"{name}: perplexity {perplexity[name]:.3f} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
        except Exception as error:
            result["failures"][f"{name}_perplexity"] = f"{type(error).__name__}: {error}"
    result["perplexity"] = perplexity

    # Warm-up: once per engine and batch size, both shapes (XLA compiles per cache length).
    for batch in batch_sizes:
        for name, engine in list(engines.items()):
            t0 = time.perf_counter()
            try:
                engine.generate(prompts_all[:batch], 1)
                out = engine.generate(prompts_all[:batch], args.new_tokens)
                if out.shape != (batch, args.new_tokens):
                    raise RuntimeError(f"generate returned shape {out.shape}")
                print(f"{name} batch {batch}: warm-up {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr)  # fmt: skip
            except Exception as error:
                result["failures"][name] = f"warm-up batch {batch}: {type(error).__name__}: {error}"
                print(f"{name}: FAILED in warm-up: {error}", file=sys.stderr)
                del engines[name]

    # Timed rounds, order rotated each round.
    order = [n for n in names if n in engines]
    prefill: dict[tuple[str, int], list[float]] = {(n, b): [] for n in order for b in batch_sizes}
    total: dict[tuple[str, int], list[float]] = {(n, b): [] for n in order for b in batch_sizes}
    outputs: dict[tuple[str, int], np.ndarray] = {}
    orders = []
    round_loads: list[list[float]] = []
    for round_index in range(args.rounds):
        start = round_index % len(order) if order else 0
        rotated = [*order[start:], *order[:start]]
        orders.append(rotated)
        round_loads.append(list(os.getloadavg()))
        for batch in batch_sizes:
            for name in rotated:
                prompts = prompts_all[:batch]
                engine = engines[name]
                time.sleep(args.pause)
                p_s, _ = timed(lambda e=engine, p=prompts: e.generate(p, 1))
                time.sleep(args.pause)
                t_s, out = timed(lambda e=engine, p=prompts: e.generate(p, args.new_tokens))
                prefill[(name, batch)].append(p_s)
                total[(name, batch)].append(t_s)
                outputs.setdefault((name, batch), out)
                rate = batch * (args.new_tokens - 1) / (t_s - p_s)
                print(f"round {round_index} batch {batch} {name}: prefill {p_s:.3f} s, "
                      f"total {t_s:.3f} s, decode {rate:.1f} tok/s", file=sys.stderr)  # fmt: skip
    result["round_orders"] = orders
    result["load_average_at_round_start"] = round_loads

    bandwidth_end = read_bandwidth()
    result["bandwidth_end"] = bandwidth_end
    bandwidth = max(result["bandwidth_start"]["gb_per_s_median"], bandwidth_end["gb_per_s_median"])
    result["bandwidth_used_gb_per_s"] = bandwidth
    result["bandwidth_note"] = (
        "the highest median (start or end, 1 or 2 threads): the stricter bound"
    )

    kv_dims = None  # cache elements per position: layers × (keys + values) × kv heads × Dh
    if tokenizer_engine is not None:
        m = tokenizer_engine.model
        kv_dims = m.num_layers * 2 * m.num_kv_heads * m.head_dim
    per_engine: dict[str, Any] = {}
    for name in order:
        engine = engines[name]
        entry: dict[str, Any] = {
            "description": engine.description,
            "weight_bytes": engine.weight_bytes,
            "perplexity": perplexity.get(name),
            "batches": {},
        }
        for batch in batch_sizes:
            stats = summarize(batch, args.new_tokens, prefill[(name, batch)], total[(name, batch)])
            bound = batch * bandwidth * 1e9 / engine.weight_bytes
            stats["bandwidth_bound_tokens_per_second"] = bound
            if kv_dims is not None:
                # Mean over the decode steps of the positions each must read (P + i).
                positions = args.prompt_tokens + (args.new_tokens - 1) / 2
                element = 2 if name == "llamacpp" else 4  # llama.cpp's cache is float16
                kv = batch * kv_dims * element * positions
                stats["kv_cache_bytes_per_step"] = kv
                stats["bandwidth_bound_with_kv_tokens_per_second"] = (
                    batch * bandwidth * 1e9 / (engine.weight_bytes + kv)
                )
            stats["fraction_of_bound"] = stats["decode_tokens_per_second"] / bound
            entry["batches"][str(batch)] = stats
        per_engine[name] = entry
    result["engines"] = per_engine

    # Ratios: each tfllm engine against each peer, per batch size; the headline is the smaller.
    ratios: dict[str, Any] = {}
    peers = [p for p in ("transformers", "llamacpp") if p in per_engine]
    for ours in [n for n in order if n.startswith("tfllm")]:
        for batch in batch_sizes:
            key = str(batch)
            mine = per_engine[ours]["batches"][key]
            entry = {}
            for peer in peers:
                theirs = per_engine[peer]["batches"][key]
                per_round = [
                    (theirs_s / mine_s)
                    for mine_s, theirs_s in zip(mine["decode_s"], theirs["decode_s"], strict=True)
                ]
                entry[f"vs_{peer}"] = (
                    mine["decode_tokens_per_second"] / theirs["decode_tokens_per_second"]
                )
                entry[f"vs_{peer}_per_round_median"] = statistics.median(per_round)
                entry[f"vs_{peer}_best_rounds"] = (
                    mine["decode_tokens_per_second_best_round"]
                    / theirs["decode_tokens_per_second_best_round"]
                )
            if peers:
                worst = min(peers, key=lambda p: entry[f"vs_{p}"])
                entry["headline"] = entry[f"vs_{worst}"]
                entry["headline_peer"] = worst
            ratios[f"{ours}_batch{batch}"] = entry
    result["ratios"] = ratios
    result["ratio_note"] = (
        "ours / theirs, decode tokens/s (ratio of the medians; *_per_round_median: median of "
        "the per-round ratios of decode seconds; *_best_rounds: ratio of each engine's fastest "
        "round); headline = the smaller ratio of the medians over the peers"
    )

    # Greedy agreement at batch 1 (the first timed call of each engine).
    agreement: dict[str, Any] = {}
    if 1 in batch_sizes:
        reference = outputs.get(("transformers", 1))
        for name in order:
            tokens = outputs[(name, 1)][0].tolist()
            item: dict[str, Any] = {"first_32": tokens[:GREEDY_COMPARE]}
            if tokenizer_engine is not None:
                item["text_first_32"] = tokenizer_engine.tokenizer.decode(tokens[:GREEDY_COMPARE])
            if reference is not None and name != "transformers":
                ref = reference[0].tolist()
                item["identical_first_32_vs_transformers"] = (
                    tokens[:GREEDY_COMPARE] == ref[:GREEDY_COMPARE]
                )
                item["common_prefix_vs_transformers"] = common_prefix(tokens, ref)
            agreement[name] = item
        for name in order:  # batch consistency: row 0 of a batch is the batch-1 prompt
            for batch in batch_sizes:
                if batch > 1:
                    same = outputs[(name, batch)][0].tolist() == outputs[(name, 1)][0].tolist()
                    agreement[name][f"batch{batch}_row0_equals_batch1"] = same
    result["greedy_agreement"] = agreement

    # The targets, judged per batch size on the conservative figures.
    targets: dict[str, Any] = {}
    for batch in batch_sizes:
        key = str(batch)
        if "tfllm" in per_engine and "transformers" in per_engine:
            targets[f"float32_ge_1.5x_transformers_batch{batch}"] = (
                ratios[f"tfllm_batch{batch}"]["vs_transformers"] >= 1.5
            )
        if "tfllm" in per_engine:
            targets[f"float32_ge_0.8_of_bound_batch{batch}"] = (
                per_engine["tfllm"]["batches"][key]["fraction_of_bound"] >= 0.8
            )
        for q in ("tfllm_int8", "tfllm_int8_wo"):
            if q in per_engine and "llamacpp" in per_engine:
                targets[f"{q}_ge_llamacpp_batch{batch}"] = (
                    ratios[f"{q}_batch{batch}"]["vs_llamacpp"] >= 1.0
                )
    for q in ("tfllm_int8", "tfllm_int8_wo"):
        if q in perplexity and "tfllm" in perplexity:
            change = perplexity[q] / perplexity["tfllm"] - 1
            targets[f"{q}_perplexity_within_2pct_of_float"] = abs(change) <= 0.02
            targets[f"{q}_perplexity_change"] = change
    result["targets_met"] = targets

    result["load_average_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.time() - wall_start
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.output)

    print(
        "\nengine         batch  decode tok/s (best)  bound  frac  prefill s  ppl", file=sys.stderr
    )
    for name in order:
        for batch in batch_sizes:
            s = per_engine[name]["batches"][str(batch)]
            print(f"{name:14s} {batch:5d}  {s['decode_tokens_per_second']:12.1f} "
                  f"({s['decode_tokens_per_second_best_round']:5.1f})  "
                  f"{s['bandwidth_bound_tokens_per_second']:5.0f}  {s['fraction_of_bound']:4.2f}  "
                  f"{s['prefill_median_s']:9.3f}  {perplexity.get(name, float('nan')):.3f}",
                  file=sys.stderr)  # fmt: skip
    print(json.dumps({"ratios": ratios, "targets_met": targets}, indent=1), file=sys.stderr)
    print(f"wrote {args.output} ({result['wall_seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
