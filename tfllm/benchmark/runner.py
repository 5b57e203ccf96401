"""Runs the requested benchmarks and collects one flat-ish result dict.

Headline numbers sit at the top level (`train_tokens_per_second`, `mfu`,
`decode_tokens_per_second`, the keras-hub numbers and the ratios) so scripts
can read them without knowing the layout; per-side details are nested.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import keras_hub
import ml_collections
import tensorflow as tf

from tfllm.benchmark.decode_bench import DecodeBench, random_prompt
from tfllm.benchmark.peak import measure_peak_gflops, theoretical_peak
from tfllm.benchmark.peer import KerasHubDecodeBench, build_train_model
from tfllm.benchmark.stats import summarize_seconds
from tfllm.benchmark.timing import Timed, interleave
from tfllm.benchmark.train_bench import TrainBench, build_ours
from tfllm.config import LM_NAMES
from tfllm.errors import ConfigError
from tfllm.utils.machine import cpu_model

# The targets ("Training and decoding speed").
TARGET_TRAIN_SPEEDUP = 1.3
TARGET_MFU = 0.5
TARGET_DECODE_SPEEDUP = 2.0


@dataclass(frozen=True)
class BenchSettings:
    """What the command line chose."""

    mode: str  # "train", "decode" or "all"
    peer: str  # "none" or "keras_hub"
    steps: int  # timed train steps per repeat
    warmup: int  # discarded train steps / generate calls per side
    repeats: int  # interleaved rounds
    decode_batch: int
    decode_prompt_len: int
    decode_new_tokens: int
    # Also time training under these precisions, interleaved with the config's.
    compare_precisions: tuple[str, ...] = ()


def cpu_has_native_bfloat16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX-BF16).

    On such a CPU `mixed_bfloat16` trains faster than float32 (oneDNN's bf16
    matmuls run at about twice the fp32 rate); without it bf16 is emulated and
    slower, so two result files are only comparable if this field agrees.
    """
    if not os.path.isfile("/proc/cpuinfo"):
        return False
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def environment() -> dict[str, object]:
    """Machine and library versions: a speed number means nothing without them."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_native_bfloat16": cpu_has_native_bfloat16(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to `precision` inside the block.

    A Keras layer keeps the policy it was built under, so models built (and
    traced, by a first step) inside the block compute in `precision` even
    after the global policy is back.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compute_dtype(precision: str) -> str:
    """The dtype a Keras policy computes in ("mixed_bfloat16" -> "bfloat16")."""
    return keras.DTypePolicy(precision).compute_dtype


def _train_sides(
    config: ml_collections.ConfigDict, precision: str, peer: str, suffix: str
) -> list[TrainBench]:
    """Ours (and the peer) built and traced under `precision`."""
    run_config = config.copy_and_resolve_references()
    run_config.runtime.precision = precision
    with dtype_policy(precision):
        sides = [TrainBench(f"ours{suffix}", build_ours(run_config), run_config)]
        if peer == "keras_hub":
            sides.append(
                TrainBench(f"keras_hub{suffix}", build_train_model(run_config), run_config)
            )
        for side in sides:
            side.run_once()  # trace under the policy the model was built with
    return sides


def _train(config: ml_collections.ConfigDict, settings: BenchSettings) -> dict[str, object]:
    """Training steps of ours (and the peer) under the config's precision and
    each of `settings.compare_precisions`, all interleaved in one set of rounds."""
    precisions = [str(config.runtime.precision), *settings.compare_precisions]
    sides = {
        precision: _train_sides(config, precision, settings.peer, "" if i == 0 else f"_{precision}")
        for i, precision in enumerate(precisions)
    }
    ours = sides[precisions[0]][0]
    seq_len = int(config.model.max_length)
    flops_per_token = ours.model.flops_per_token(seq_len)
    seconds = interleave(
        [side for group in sides.values() for side in group],
        settings.warmup,
        settings.repeats,
        settings.steps,
    )

    def side_result(side: TrainBench, precision: str) -> dict[str, object]:
        stats = summarize_seconds(seconds[side.name], side.tokens_per_step, "train")
        tps = stats.pop("train_tokens_per_second")
        renamed = {k.replace("train_time", "step_time"): v for k, v in stats.items()}
        return {
            "train_tokens_per_second": tps,
            "num_params": int(side.model.count_params()),
            "compute_dtype": str(side.model.compute_dtype),
            **renamed,
        }

    by_precision = {
        precision: [side_result(side, precision) for side in group]
        for precision, group in sides.items()
    }
    first = by_precision[precisions[0]]
    result: dict[str, object] = {
        "train_tokens_per_step": ours.tokens_per_step,
        "flops_per_token": int(flops_per_token),
        **first[0],
    }
    if len(first) > 1:
        peer = first[1]
        result["keras_hub_train"] = peer
        result["keras_hub_train_tokens_per_second"] = peer["train_tokens_per_second"]
        result["train_speedup_vs_keras_hub"] = (
            result["train_tokens_per_second"] / peer["train_tokens_per_second"]
        )
    if len(precisions) > 1:
        result["train_by_precision"] = _by_precision_summary(by_precision)
    return result


def _by_precision_summary(by_precision: dict[str, list[dict]]) -> dict[str, dict[str, object]]:
    """Per precision: ours, the peer, ours / peer at that precision, and ours /
    the peer in float32 (keras-hub's default policy) when float32 was timed."""
    hub_float32 = by_precision.get("float32", [])[1:]
    summary: dict[str, dict[str, object]] = {}
    for precision, (ours, *peer) in by_precision.items():
        entry: dict[str, object] = {"ours": ours}
        tps = float(ours["train_tokens_per_second"])
        if peer:
            entry["keras_hub"] = peer[0]
            entry["train_speedup_vs_keras_hub"] = tps / float(peer[0]["train_tokens_per_second"])
        if hub_float32:
            entry["train_speedup_vs_keras_hub_float32"] = tps / float(
                hub_float32[0]["train_tokens_per_second"]
            )
        summary[precision] = entry
    return summary


def _decode(config: ml_collections.ConfigDict, settings: BenchSettings) -> dict[str, object]:
    prompt = random_prompt(
        settings.decode_batch, settings.decode_prompt_len, int(config.tokenizer.vocab_size)
    )
    new = settings.decode_new_tokens
    sides: list[Timed] = [DecodeBench("ours", build_ours(config), prompt, new)]
    if settings.peer == "keras_hub":
        # keras-hub as configured by default, and with XLA forced on: the
        # ratio against the faster of the two is the one that counts
        # (`decode_speedup_headline`).
        sides.append(KerasHubDecodeBench("keras_hub", config, prompt, new))
        sides.append(KerasHubDecodeBench("keras_hub_xla", config, prompt, new, jit_compile=True))
    # One generate call per side and round: at least 5 rounds, so the median
    # is not one call away from an outlier.
    seconds = interleave(sides, max(1, settings.warmup), max(settings.repeats, 5), 1)
    work = settings.decode_batch * new

    def side_result(name: str) -> dict[str, float]:
        stats = summarize_seconds(seconds[name], work, "decode")
        return {
            "decode_tokens_per_second": stats["decode_tokens_per_second"],
            "decode_seconds_median": stats["decode_time_median_s"],
            "decode_seconds_p10": stats["decode_time_p10_s"],
            "decode_seconds_p90": stats["decode_time_p90_s"],
            "decode_ms_per_step_median": 1e3 * stats["decode_time_median_s"] / new,
            "decode_samples": stats["decode_samples"],
        }

    result: dict[str, object] = {
        "decode_batch": settings.decode_batch,
        "decode_prompt_len": settings.decode_prompt_len,
        "decode_new_tokens": new,
        **side_result("ours"),
    }
    if settings.peer == "keras_hub":
        default, xla = side_result("keras_hub"), side_result("keras_hub_xla")
        default["jit_compile"] = sides[1].jit_compile  # type: ignore[attr-defined]
        xla["jit_compile"] = sides[2].jit_compile  # type: ignore[attr-defined]
        ours_tps = result["decode_tokens_per_second"]
        result["keras_hub_decode"] = default
        result["keras_hub_xla_decode"] = xla
        result["keras_hub_decode_tokens_per_second"] = default["decode_tokens_per_second"]
        result["keras_hub_xla_decode_tokens_per_second"] = xla["decode_tokens_per_second"]
        result["decode_speedup_vs_keras_hub"] = ours_tps / default["decode_tokens_per_second"]
        result["decode_speedup_vs_keras_hub_xla"] = ours_tps / xla["decode_tokens_per_second"]
        # The conservative figure: against the faster keras-hub variant.
        result["decode_speedup_headline"] = min(
            result["decode_speedup_vs_keras_hub"], result["decode_speedup_vs_keras_hub_xla"]
        )
        xla_faster = xla["decode_tokens_per_second"] > default["decode_tokens_per_second"]
        result["decode_peer_headline"] = "keras_hub_xla" if xla_faster else "keras_hub"
    return result


def _add_mfu(result: dict[str, object], peaks: dict[str, float]) -> None:
    """MFU of every timed training side, against `peaks` (per compute dtype).

    Computed after the run, so the denominator can be the higher of the peaks
    measured before and after it: a peak taken while another process loaded
    the machine would otherwise inflate MFU (0.86 against the start peak vs
    0.75 against the end peak in one recorded run).
    """
    flops = result.get("flops_per_token")
    if not flops:
        return
    sides: list[dict] = [result]
    if isinstance(result.get("keras_hub_train"), dict):
        sides.append(result["keras_hub_train"])  # type: ignore[arg-type]
    for entry in result.get("train_by_precision", {}).values():  # type: ignore[union-attr]
        sides += [entry["ours"], *([entry["keras_hub"]] if "keras_hub" in entry else [])]
    for side in sides:
        if "train_tokens_per_second" in side and "compute_dtype" in side:
            peak = peaks[str(side["compute_dtype"])]
            side["mfu"] = float(side["train_tokens_per_second"]) * float(flops) / (peak * 1e9)
    if isinstance(result.get("keras_hub_train"), dict):
        result["keras_hub_mfu"] = result["keras_hub_train"]["mfu"]  # type: ignore[index]


def _targets(result: dict[str, object]) -> dict[str, bool]:
    """Which of the issue's targets this run met (only those it measured)."""
    met: dict[str, bool] = {}
    if "mfu" in result:
        met[f"mfu_ge_{TARGET_MFU}"] = float(result["mfu"]) >= TARGET_MFU
    if "train_speedup_vs_keras_hub" in result:
        met[f"train_speedup_ge_{TARGET_TRAIN_SPEEDUP}"] = (
            float(result["train_speedup_vs_keras_hub"]) >= TARGET_TRAIN_SPEEDUP
        )
    if "decode_speedup_headline" in result:
        met[f"decode_speedup_ge_{TARGET_DECODE_SPEEDUP}"] = (
            float(result["decode_speedup_headline"]) >= TARGET_DECODE_SPEEDUP
        )
    return met


def run_benchmark(config: ml_collections.ConfigDict, settings: BenchSettings) -> dict[str, object]:
    """Measures the peak, then the requested benchmarks; returns the result dict."""
    name = config.model.name
    if name not in LM_NAMES:
        raise ConfigError(
            f"config.model.name: tfllm-benchmark times language models ({', '.join(LM_NAMES)}), "
            f"not {name!r}"
        )
    if settings.peer == "keras_hub" and name != "gpt":
        raise ConfigError(
            f"--peer=keras_hub: the peer is keras-hub's GPT-2 at the config's dimensions, a "
            f"like-for-like reference for config.model.name='gpt' only, not {name!r}"
        )
    result: dict[str, object] = {
        "mode": settings.mode,
        "peer": settings.peer,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "model": {
            "vocab_size": int(config.tokenizer.vocab_size),
            "max_length": int(config.model.max_length),
            "num_layers": int(config.model.num_layers),
            "num_heads": int(config.model.num_heads),
            "hidden_dim": int(config.model.hidden_dim),
            "intermediate_dim": int(config.model.intermediate_dim),
            "dropout": float(config.model.dropout),
            "batch_size": int(config.train.batch_size),
            "precision": str(config.runtime.precision),
            "jit_compile_train": bool(config.runtime.jit_compile),
        },
        "environment": environment(),
    }
    # MFU's denominator is the peak of the arithmetic the model does: under a
    # mixed policy that is the compute dtype's matmul, not fp32's.
    dtype = compute_dtype(str(config.runtime.precision))
    dtypes = {dtype, "float32", *(compute_dtype(p) for p in settings.compare_precisions)}
    start = {d: measure_peak_gflops(dtype=d) for d in sorted(dtypes)}
    if settings.mode in ("train", "all"):
        result.update(_train(config, settings))
    if settings.mode in ("decode", "all"):
        result.update(_decode(config, settings))
    # Peak again at the end: a large drift means the machine's load changed, and
    # MFU is taken against the higher of the two (the conservative figure).
    end = {d: measure_peak_gflops(dtype=d) for d in sorted(dtypes)}
    peaks = {d: max(start[d], end[d]) for d in start}
    result["peak_dtype"] = dtype
    result["peak_gflops"] = peaks[dtype]
    result["peak_gflops_start"] = start[dtype]
    result["peak_gflops_end"] = end[dtype]
    result["peak_used"] = "the higher of the peaks measured before and after the run"
    if dtype != "float32":
        result["peak_gflops_float32"] = peaks["float32"]
    if len(peaks) > 1:
        result["peak_gflops_by_dtype"] = peaks
    result["theoretical_peak_float32"] = theoretical_peak()
    _add_mfu(result, peaks)
    result["targets_met"] = _targets(result)
    return result
