"""Classification metrics for text classifiers: exact numbers, a PNG and a table.

Every metric comes from `sklearn.metrics`, the well-kept reference
implementation, rather than from Keras: `keras.metrics.AUC` approximates the
ROC curve with a fixed set of thresholds, so its value depends on
`num_thresholds`, while scikit-learn computes the exact rank statistic. The
metrics dict holds only plain Python types so it can go straight into
`metrics.json`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from tfllm.utils.io import atomic_write_bytes

# Softmax rows must sum to 1 within this: loose enough for float16/float32
# outputs, tight enough to catch logits or unnormalised scores passed by mistake.
_ROW_SUM_ATOL = 1e-2


def _validate(
    labels: Any, probabilities: Any, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Checks shapes and ranges up front so mistakes fail with one clear line."""
    names = [str(n) for n in class_names]
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if p.ndim != 2:
        raise ValueError(f"probabilities must be 2-D [N, C], got shape {p.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(
            f"labels and probabilities have different lengths: {y.shape[0]} vs {p.shape[0]}"
        )
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on 0 examples")
    num_classes = p.shape[1]
    if num_classes != len(names):
        raise ValueError(
            f"probabilities have {num_classes} columns but {len(names)} class names were given"
        )
    if num_classes < 2:
        raise ValueError(f"classification needs at least 2 classes, got {num_classes}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise ValueError("labels must be integer class ids")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels must be in [0, {num_classes}), got values in [{y.min()}, {y.max()}]"
        )
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must be finite and in [0, 1] (softmax outputs)")
    row_sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > _ROW_SUM_ATOL:
        raise ValueError(
            f"probability rows must sum to 1 (softmax outputs); row {worst} sums to "
            f"{row_sums[worst]:.6g}"
        )
    # Exact renormalisation keeps sklearn from warning about float32 rounding.
    return y, p / row_sums[:, None], names


def _roc_auc(y: np.ndarray, p: np.ndarray, names: list[str]) -> tuple[float | None, str | None]:
    """Exact ROC-AUC: binary on class 1, else one-vs-rest macro over usable classes.

    A class is usable only if `labels` has both positives and negatives for it;
    AUC of a class with no positives (or nothing else) is undefined.
    """
    num_classes = p.shape[1]
    present = np.unique(y)
    if present.size < 2:
        return None, (
            f"ROC-AUC is undefined because only one class ({names[int(present[0])]!r}) "
            "occurs in the labels."
        )
    if num_classes == 2:
        return float(roc_auc_score(y == 1, p[:, 1])), None
    aucs = [float(roc_auc_score(y == k, p[:, k])) for k in present]
    return float(np.mean(aucs)), None


def classification_metrics(
    labels: Any, probabilities: Any, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, P/R/F1 (macro, micro, weighted, per class), confusion matrix,
    log loss and ROC-AUC of argmax predictions, as a JSON-serialisable dict.

    Classes are always `range(C)`, so a class missing from `labels` or never
    predicted still gets a row (its undefined ratios count as 0.0).
    """
    y, p, names = _validate(labels, probabilities, class_names)
    class_ids = list(range(len(names)))
    pred = np.argmax(p, axis=1)

    def averaged(average: str) -> tuple[float, float, float]:
        prec, rec, f1, _ = precision_recall_fscore_support(
            y, pred, labels=class_ids, average=average, zero_division=0
        )
        return float(prec), float(rec), float(f1)

    macro_p, macro_r, macro_f1 = averaged("macro")
    micro_p, micro_r, micro_f1 = averaged("micro")
    _, _, weighted_f1 = averaged("weighted")
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=class_ids, average=None, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(names)
    }
    matrix = confusion_matrix(y, pred, labels=class_ids)
    auc, auc_note = _roc_auc(y, p, names)
    metrics: dict[str, Any] = {
        "num_examples": int(y.shape[0]),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_precision": macro_p,
        "macro_recall": macro_r,
        "macro_f1": macro_f1,
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "weighted_f1": weighted_f1,
        "per_class": per_class,
        "confusion_matrix": [[int(v) for v in row] for row in matrix],
        # Positional y_proba: the keyword was renamed in sklearn 1.9.
        "log_loss": float(log_loss(y, p, labels=class_ids)),
        "roc_auc": auc,
    }
    if auc_note is not None:
        metrics["roc_auc_note"] = auc_note
    return metrics


def save_confusion_matrix_png(
    matrix: Any,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
) -> None:
    """Renders `matrix` (rows true, columns predicted) as an annotated heatmap PNG.

    Colour is row-normalised (per-class recall) so small classes stay visible;
    cells show raw counts. Written atomically: a killed run leaves no torn PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.int64)
    names = [str(n) for n in class_names]
    n = len(names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix must be {n}x{n} for {n} class names, got shape {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    normed = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)

    side = min(max(4.0, 0.55 * n + 2.5), 16.0)
    font = 10 if n <= 10 else 8 if n <= 24 else 6
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        image = ax.imshow(normed, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        ticks = list(range(n))
        rotate = n > 4 or max(len(s) for s in names) > 8
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(
            names, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=font
        )
        ax.set_yticklabels(names, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if normed[i, j] > 0.5 else "black",
                )
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Plain-text summary of `classification_metrics` output for a terminal."""
    auc = _fmt(metrics.get("roc_auc"))
    if metrics.get("roc_auc") is None and metrics.get("roc_auc_note"):
        auc += f" ({metrics['roc_auc_note']})"
    lines = [
        f"examples        {metrics['num_examples']}",
        f"accuracy        {_fmt(metrics['accuracy'])}",
        f"{'':16}{'precision':>10} {'recall':>10} {'f1':>10}",
    ]
    for avg in ("macro", "micro"):
        lines.append(
            f"{avg:<16}{_fmt(metrics[f'{avg}_precision']):>10} "
            f"{_fmt(metrics[f'{avg}_recall']):>10} {_fmt(metrics[f'{avg}_f1']):>10}"
        )
    lines += [
        f"weighted f1     {_fmt(metrics['weighted_f1'])}",
        f"roc-auc         {auc}",
        f"log loss        {_fmt(metrics['log_loss'])}",
        "",
    ]
    per_class = metrics["per_class"]
    width = max([len("class")] + [len(name) for name in per_class])
    lines.append(f"{'class':<{width}}  {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}")
    for name, row in per_class.items():
        lines.append(
            f"{name:<{width}}  {_fmt(row['precision']):>10} {_fmt(row['recall']):>10} "
            f"{_fmt(row['f1']):>10} {row['support']:>8}"
        )
    return "\n".join(lines)
