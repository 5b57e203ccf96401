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
