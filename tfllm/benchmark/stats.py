"""Small timing statistics shared by the benchmarks."""

from __future__ import annotations

import statistics

import numpy as np


def summarize_seconds(seconds: list[float], work: float, prefix: str) -> dict[str, float]:
    """Median / p10 / p90 of step times and the median rate `work / time`.

    The rate is the median of per-step rates, so one slow step (another
    process on a shared machine) moves it as little as it moves the median time.
    """
    times = np.asarray(seconds, dtype=np.float64)
    return {
        f"{prefix}_tokens_per_second": float(statistics.median(work / times)),
        f"{prefix}_time_median_s": float(np.median(times)),
        f"{prefix}_time_p10_s": float(np.percentile(times, 10)),
        f"{prefix}_time_p90_s": float(np.percentile(times, 90)),
        f"{prefix}_samples": int(times.size),
    }
