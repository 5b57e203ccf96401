"""The machine's measured matmul throughput: the denominator of MFU.

A vendor's theoretical peak says little about what TensorFlow can reach on a
shared CPU, so MFU is reported against a large matmul timed in the same run,
under the same thread settings and machine load as the model, in the dtype
the model computes in: a CPU with native bfloat16 (AVX512_BF16, AMX) runs a
bf16 matmul about twice as fast as fp32 (measured, docs/benchmarks.md), so a
`mixed_bfloat16` run measured against the fp32 peak would report an MFU
above 1.
"""

from __future__ import annotations

import os
import statistics
import time

import tensorflow as tf


def measure_peak_gflops(
    size: int = 2048, warmup: int = 3, repeats: int = 7, dtype: str = "float32"
) -> float:
    """Median GFLOP/s of a `[size, size] @ [size, size]` matmul in `dtype`, in a tf.function.

    The product is reduced to a scalar inside the function so the timing does
    not include copying a large result to Python.
    """
    a = tf.cast(tf.random.stateless_uniform([size, size], seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform([size, size], seed=(3, 4)), dtype)

    @tf.function
    def matmul(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.matmul(x, y))

    for _ in range(max(1, warmup)):
        matmul(a, b).numpy()
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        matmul(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(seconds) / 1e9


# fp32 FLOPs per cycle per core by the widest vector ISA, assuming two FMA
# units (most server cores; some have one, which halves the figure).
_FLOPS_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("avx", 16), ("sse2", 8))


def theoretical_peak(cpuinfo: str = "/proc/cpuinfo") -> dict[str, object] | None:
    """The CPU's datasheet-style fp32 peak: cores × clock × FLOPs per cycle.

    An estimate from `/proc/cpuinfo` (the reported clock, the widest vector
    ISA, two FMA units assumed), recorded beside the measured peak so MFU can
    be read both ways; None where the file is missing or names no clock.
    """
    if not os.path.isfile(cpuinfo):
        return None
    with open(cpuinfo, encoding="utf-8") as f:
        text = f.read()
    mhz = [float(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    if not mhz:
        return None
    isa, per_cycle = next(
        ((name, n) for name, n in _FLOPS_PER_CYCLE if f" {name} " in f" {flags} "), ("x87", 2)
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ghz = max(mhz) / 1e3
    return {
        "gflops": round(cores * ghz * per_cycle, 1),
        "cores": cores,
        "ghz": round(ghz, 3),
        "isa": isa,
        "flops_per_cycle_assumed": per_cycle,
        "formula": "cores x GHz x fp32 FLOPs/cycle (2 FMA units assumed)",
    }
