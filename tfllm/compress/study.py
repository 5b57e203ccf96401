"""The compression trade-off table: every method on one trained model, measured alike.

For a trained workdir, `run_study` makes each row's model (`tfllm-compress`),
exports it (`tfllm-export --format=tflite`), scores the `.tflite` itself in
LiteRT on the eval split (`tfllm-evaluate --backend=litert`), and reads size,
gzip size and batch-1 latency from the export's verification record. Every
row is therefore the deployed artifact's number, not the Keras model's. Each
step is skipped when its output already exists, so an interrupted study
resumes. The commands run as subprocesses: exactly what a user would type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from tfllm.config import CLASSIFIER_NAMES, load_workdir_config
from tfllm.errors import TfllmError
from tfllm.export.litert import latency, tflite_dir
from tfllm.inference.classifier_tflite_runner import LiteRTClassifier
from tfllm.inference.lm_tflite_runner import LiteRTLM
from tfllm.inference.loading import load_trained
from tfllm.utils.io import atomic_write_json, atomic_write_text, read_json


@dataclass(frozen=True)
class Row:
    key: str  # row id, and the compressed workdir's name under the study root
    label: str
    quantize: str  # which TFLite export is measured
    method: str = ""  # "" = the source model itself
    flags: tuple[str, ...] = ()
    workdir_key: str = ""  # share another row's workdir (e.g. pruned + int8)


def default_rows(
    student_config: str, prune_steps: int, qat_steps: int, lm: bool = False
) -> list[Row]:
    prune = (f"--steps={prune_steps}",) if prune_steps else ()
    qat = (f"--steps={qat_steps}",) if qat_steps else ()
    rows = [
        Row("dense", "dense (float32)", "none"),
        Row("prune50", "pruned 50%", "none", "prune", ("--sparsity=0.5", *prune)),
        Row("prune80", "pruned 80%", "none", "prune", ("--sparsity=0.8", *prune)),
        Row("prune90", "pruned 90%", "none", "prune", ("--sparsity=0.9", *prune)),
        Row("prune_2of4", "pruned 2:4", "none", "prune", ("--m_by_n=2:4", *prune)),
        *(
            [
                Row(
                    "prune80_dense_embedding",
                    "pruned 80%, embedding/LM head kept dense",
                    "none",
                    "prune",
                    ("--sparsity=0.8", "--noprune_embeddings", *prune),
                )
            ]
            if lm
            else []
        ),
        Row("ptq_dynamic", "PTQ dynamic range", "dynamic"),
        Row("ptq_float16", "PTQ float16", "float16"),
        Row("ptq_int8", "PTQ int8", "int8"),
        Row("qat_int8", "QAT int8", "int8", "qat", qat),
        Row("prune80_int8", "pruned 80% + PTQ int8", "int8", workdir_key="prune80"),
    ]
    if student_config:
        rows.append(
            Row(
                "student",
                "distilled student",
                "none",
                "distill",
                (f"--student_config={student_config}",),
            )
        )
    return rows


@dataclass
class Measured:
    row: Row
    workdir: str
    metric: float
    size_bytes: int
    gzip_bytes: int
    latency_ms: float
    params: int
    nonzero_params: int
    extra: dict = field(default_factory=dict)


def _cli(command: str, *args: str, log: str) -> None:
    """Runs one tfllm command, its output appended to `log`; a failure stops the study."""
    cmd = [sys.executable, "-m", f"tfllm.cli.{command}", *args]
    print("$ tfllm-" + command + " " + " ".join(args), flush=True)
    with open(log, "a", encoding="utf-8") as out:
        out.write("\n$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise TfllmError(
            f"tfllm-{command} {' '.join(args)} failed (exit {proc.returncode}); see {log}"
        )


def _row_workdir(source: str, root: str, row: Row) -> str:
    key = row.workdir_key or (row.key if row.method else "")
    return os.path.join(root, key) if key else source


def _metric_key(workdir: str, quantize: str) -> tuple[str, str | None]:
    if load_workdir_config(workdir).model.name in CLASSIFIER_NAMES:
        return f"litert_{quantize}_eval", "accuracy"
    return f"litert_{quantize}_eval_perplexity", None


def measure_row(source: str, root: str, row: Row, eval_batches: int, log: str) -> Measured:
    """Compress (if needed), export, evaluate in LiteRT; read the numbers back."""

    workdir = _row_workdir(source, root, row)
    if row.method and not os.path.isfile(os.path.join(workdir, "compression.json")):
        _cli(
            "compress",
            f"--workdir={source}",
            f"--output={workdir}",
            f"--method={row.method}",
            *row.flags,
            log=log,
        )
    export_dir = tflite_dir(workdir, row.quantize)
    verification_path = os.path.join(export_dir, "verification.json")
    if not os.path.isfile(verification_path):
        _cli(
            "export",
            f"--workdir={workdir}",
            "--format=tflite",
            f"--quantize={row.quantize}",
            log=log,
        )
    slot, field_name = _metric_key(workdir, row.quantize)
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    if slot not in metrics:
        args = [f"--workdir={workdir}", "--backend=litert", f"--quantize={row.quantize}"]
        if field_name is None and eval_batches:
            args.append(f"--max_batches={eval_batches}")
        _cli("evaluate", *args, log=log)
        metrics = read_json(os.path.join(workdir, "metrics.json"))
    metric = metrics[slot][field_name] if field_name else metrics[slot]
    verification = read_json(verification_path)
    if "latency_batch1" in verification:
        latency = verification["latency_batch1"]["median_ms"]
    else:
        latency = verification["latency"]["decode"]["median_ms"]
    trained = load_trained(workdir)
    params = int(trained.model.count_params())
    zeros = sum(int((v.numpy() == 0).sum()) for v in trained.model.weights)
    return Measured(
        row=row,
        workdir=workdir,
        metric=float(metric),
        size_bytes=int(verification["size_bytes"]),
        gzip_bytes=int(verification["gzip_bytes"]),
        latency_ms=float(latency),
        params=params,
        nonzero_params=params - zeros,
    )


def run_study(
    source: str,
    root: str,
    rows: list[Row],
    eval_batches: int = 8,
) -> list[Measured]:
    os.makedirs(root, exist_ok=True)
    log = os.path.join(root, "study.log")
    results = []
    for i, row in enumerate(rows, 1):
        print(f"[{i}/{len(rows)}] {row.label}", flush=True)
        results.append(measure_row(source, root, row, eval_batches, log))
        write_outputs(source, root, results)  # partial tables survive an interruption
    return results


def remeasure_latency(results: list[Measured], rounds: int = 5) -> None:
    """Re-times every row's file in interleaved rounds; keeps each row's median of medians.

    The export records latency when the file is written, possibly while other
    jobs load the machine; for the table, every file is timed again in the
    same quiet window, round-robin so drift hits all rows alike. Same
    measurement as the export's: batch 1, one thread, median of 100 runs
    (classifiers: one eval row; LMs: one decode step at the middle position).
    """
    import statistics

    runners = []
    for r in results:
        export_dir = tflite_dir(r.workdir, r.row.quantize)
        if load_workdir_config(r.workdir).model.name in CLASSIFIER_NAMES:
            one = LiteRTClassifier(export_dir, num_threads=1)
            row = one.encode(["a quietly moving , beautifully acted film"])
            runners.append(lambda one=one, row=row: one.predict_proba_ids(row))
        else:
            lm = LiteRTLM(os.path.join(export_dir, "model.tflite"), num_threads=1)
            cache, middle = lm.empty_cache(), lm.max_length // 2
            runners.append(lambda lm=lm, cache=cache, middle=middle: lm.decode(1, middle, cache))
    medians: list[list[float]] = [[] for _ in results]
    for _ in range(rounds):
        for i, run_once in enumerate(runners):
            medians[i].append(latency(run_once)["median_ms"])
    for r, values in zip(results, medians, strict=True):
        r.latency_ms = statistics.median(values)


def _is_lm(source: str) -> bool:
    return load_workdir_config(source).model.name not in CLASSIFIER_NAMES


def format_table(source: str, results: list[Measured]) -> str:
    lm = _is_lm(source)
    dense = next((r for r in results if r.row.key == "dense"), results[0])
    metric_name = "perplexity (LiteRT)" if lm else "accuracy (LiteRT)"
    lines = [
        f"| model | {metric_name} | Δ vs dense | .tflite bytes | × dense | gzip bytes | × dense | "
        f"{'decode' if lm else 'batch-1'} latency ms (median) | parameters | non-zero |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if lm:
            value, delta = f"{r.metric:.2f}", f"{(r.metric / dense.metric - 1) * 100:+.1f}%"
        else:
            value, delta = f"{r.metric * 100:.2f}%", f"{(r.metric - dense.metric) * 100:+.2f} pt"
        lines.append(
            f"| {r.row.label} | {value} | {delta} | {r.size_bytes:,} | "
            f"{r.size_bytes / dense.size_bytes:.2f} | {r.gzip_bytes:,} | "
            f"{r.gzip_bytes / dense.gzip_bytes:.2f} | {r.latency_ms:.3f} | {r.params:,} | "
            f"{r.nonzero_params:,} |"
        )
    return "\n".join(lines) + "\n"


def plot(title: str, lm: bool, points: list[tuple[str, int, float]], path: str) -> None:
    """Size (gzip bytes, log scale) against the task metric; one marker per row, in a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^v<>pPX*h"
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (label, gzip_bytes, metric) in enumerate(points):
        y = metric if lm else metric * 100
        ax.scatter(gzip_bytes, y, s=45, marker=markers[i % len(markers)], label=label)
    ax.set_xscale("log")
    if lm:
        ax.set_yscale("log")
    ax.set_xlabel("gzip-compressed .tflite bytes (log scale)")
    ax.set_ylabel(
        "perplexity (LiteRT, log scale; lower is better)" if lm else "accuracy % (LiteRT)"
    )
    ax.set_title(f"Size vs quality: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def replot(root: str) -> str:
    """Redraws `size_vs_quality.png` from `study.json` (e.g. after re-timing)."""
    study = read_json(os.path.join(root, "study.json"))
    points = [(r["label"], r["gzip_bytes"], r["metric"]) for r in study["rows"]]
    path = os.path.join(root, "size_vs_quality.png")
    source = study["source"]
    plot(os.path.basename(os.path.normpath(source)), _is_lm(source), points, path)
    return path


def write_outputs(source: str, root: str, results: list[Measured]) -> None:
    atomic_write_text(os.path.join(root, "compression_table.md"), format_table(source, results))
    atomic_write_json(
        os.path.join(root, "study.json"),
        {
            "source": os.path.abspath(source),
            "rows": [
                {
                    "key": r.row.key,
                    "label": r.row.label,
                    "workdir": r.workdir,
                    "quantize": r.row.quantize,
                    "method": r.row.method,
                    "flags": list(r.row.flags),
                    "metric": r.metric,
                    "size_bytes": r.size_bytes,
                    "gzip_bytes": r.gzip_bytes,
                    "latency_ms": r.latency_ms,
                    "params": r.params,
                    "nonzero_params": r.nonzero_params,
                }
                for r in results
            ],
        },
    )
    plot(
        os.path.basename(os.path.normpath(source)),
        _is_lm(source),
        [(r.row.label, r.gzip_bytes, r.metric) for r in results],
        os.path.join(root, "size_vs_quality.png"),
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="trained workdir")
    parser.add_argument("--root", required=True, help="where the compressed workdirs go")
    parser.add_argument("--student_config", default="", help="distill row's student config")
    parser.add_argument("--prune_steps", type=int, default=0)
    parser.add_argument("--qat_steps", type=int, default=0)
    parser.add_argument("--eval_batches", type=int, default=8, help="LM: LiteRT eval batches")
    parser.add_argument("--rows", default="", help="comma-separated row keys (default: all)")
    parser.add_argument(
        "--latency_rounds",
        type=int,
        default=5,
        help="re-time every file in N interleaved rounds at the end (0: keep export-time numbers)",
    )
    args = parser.parse_args(argv)
    rows = default_rows(
        args.student_config, args.prune_steps, args.qat_steps, lm=_is_lm(args.source)
    )
    if args.rows:
        wanted = args.rows.split(",")
        unknown = sorted(set(wanted) - {r.key for r in rows})
        if unknown:
            parser.error(f"--rows: unknown {', '.join(unknown)}")
        rows = [r for r in rows if r.key in wanted]
    try:
        results = run_study(args.source, args.root, rows, args.eval_batches)
        if args.latency_rounds:
            remeasure_latency(results, args.latency_rounds)
            write_outputs(args.source, args.root, results)
    except TfllmError as e:
        print(f"compression study: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(format_table(args.source, results))
    print(json.dumps({"table": os.path.join(args.root, "compression_table.md")}))


if __name__ == "__main__":
    main()
