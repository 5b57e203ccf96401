"""The journey report's own plots: dev-accuracy curves, size vs accuracy, LiteRT latency.

Each returns False (and writes nothing) when there is nothing to plot.
matplotlib is imported inside each function: only the report stage needs it.
"""

from __future__ import annotations

import os

from tfllm.pipeline.common import EDGE_QUANTIZE
from tfllm.pipeline.journey_layout import CLASSIFIER_PARTS
from tfllm.pipeline.journey_results import Variant
from tfllm.utils.io import read_json


def plot_classifier_curves(variants: list[Variant], path: str) -> bool:
    """Dev accuracy vs step, one line per family (the compressed runs are short)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = False
    for v in variants[: len(CLASSIFIER_PARTS)]:
        history = read_json(os.path.join(v.workdir, "history.json")).get("history", [])
        points = [(h["step"], h["accuracy"]) for h in history if "accuracy" in h]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=v.label)
            plotted = True
    ax.set_xlabel("step")
    ax.set_ylabel("dev accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if plotted:
        _save(fig, path)
    plt.close(fig)
    return plotted


def plot_pareto(variants: list[Variant], path: str) -> bool:
    """Shipped size (gzip of the LiteRT file) against test accuracy: what each byte buys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (v.label, v.edge["gzip_bytes"] / 1e6, v.test["accuracy"] * 100)
        for v in variants
        if v.edge and "accuracy" in v.test
    ]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, size, accuracy in points:
        ax.scatter(size, accuracy, s=40)
        ax.annotate(label, (size, accuracy), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"LiteRT file, {EDGE_QUANTIZE}, gzip MB (log)")
    ax.set_ylabel("SST-2 test accuracy (%)")
    ax.set_title("Size vs accuracy")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_latency(variants: list[Variant], lm_edge: dict, path: str) -> bool:
    """LiteRT latency per call: a classifier's batch-1 forward, the LM's decode step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (v.label, v.edge["latency_batch1"]["median_ms"])
        for v in variants
        if v.edge.get("latency_batch1")
    ]
    if lm_edge.get("latency"):
        bars.append(("GPT, one decode step", lm_edge["latency"]["decode"]["median_ms"]))
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(bars) + 1.2))
    labels, values = zip(*bars, strict=True)
    ax.barh(labels, values, color="#4c72b0")
    for i, value in enumerate(values):
        ax.annotate(f"{value:.2f}", (value, i), textcoords="offset points", xytext=(3, -3))
    ax.invert_yaxis()
    ax.set_xlabel("LiteRT latency, ms (median of 100, 1 thread)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _save(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
