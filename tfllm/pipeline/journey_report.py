"""The journey's report: W/report.md, its plots, W/results.json and W/report.html.

Everything is read back from the parts' own files (metrics.json,
verification.json, compression.json, benchmarks.json), never from memory, so
a report rebuilt after a resume shows the same numbers as the first one.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import time
from dataclasses import dataclass

import ml_collections

from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    VERIFY_EXAMPLES,
    PipelineRun,
    command_line,
    edge_dir,
    environment_lines,
    plot_curves,
    stage_lines,
)
from tfllm.pipeline.compress_stage import pruned_dir
from tfllm.pipeline.html_report import write_html_report
from tfllm.pipeline.journey import (
    CLASSIFIER_PARTS,
    FINETUNED,
    benchmark_command,
    part_dir,
)
from tfllm.pipeline.lm_pipeline import sample_prompts
from tfllm.utils.io import atomic_write_json, atomic_write_text, read_json

_FAMILY = {
    "transformer": "Transformer, fine-tuned from the GPT",
    "cnn": "CNN (Kim 2014), from scratch",
    "mlp": "MLP, bag of embeddings, from scratch",
}


@dataclass
class Variant:
    """One shipped classifier file: a family, or a compressed form of one."""

    label: str
    workdir: str
    metrics: dict
    edge: dict

    @property
    def test(self) -> dict:
        return self.metrics.get("test_split", {})


def _num(value: object, fmt: str = ".4f") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return format(value, fmt)


def _pct(value: object) -> str:
    return _num(value * 100, ".2f") + " %" if isinstance(value, int | float) else "n/a"


def _corpus(config: ml_collections.ConfigDict) -> str:
    if config.data.train_path:
        return f"`{config.data.train_path}`"
    return {
        "shakespeare": "bundled Tiny Shakespeare",
        "sst2": "bundled SST-2 train sentences, labels unused",
    }.get(config.data.dataset, f"bundled {config.data.dataset}")


def _read(workdir: str) -> tuple[dict, dict]:
    return (
        read_json(os.path.join(workdir, "metrics.json")),
        read_json(os.path.join(edge_dir(workdir), "verification.json")),
    )


def classifier_variants(workdir: str, configs: dict) -> list[Variant]:
    """The families, then the pruned and the distilled transformer (where they exist)."""
    variants = []
    for part in CLASSIFIER_PARTS:
        d = part_dir(workdir, part)
        variants.append(Variant(_FAMILY[part], d, *_read(d)))
    pruned = pruned_dir(part_dir(workdir, FINETUNED), configs[FINETUNED])
    record = read_json(os.path.join(pruned, "compression.json"))
    if record:
        label = f"Transformer, pruned {record['settings']['sparsity']:.0%}"
        variants.append(Variant(label, pruned, *_read(pruned)))
    student = part_dir(workdir, "distil")
    if read_json(os.path.join(student, "compression.json")):
        variants.append(Variant("Transformer student, distilled", student, *_read(student)))
    return [v for v in variants if v.metrics]


def _plot_classifier_curves(variants: list[Variant], path: str) -> bool:
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


def _plot_pareto(variants: list[Variant], path: str) -> bool:
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


def _plot_latency(variants: list[Variant], lm_edge: dict, path: str) -> bool:
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


def _lm_section(workdir: str, config: ml_collections.ConfigDict) -> tuple[list[str], dict]:
    lm = part_dir(workdir, "lm")
    metrics, edge = _read(lm)
    saved = read_json(os.path.join(lm, "export", "saved_model", "verification.json"))
    m = config.model
    history = read_json(os.path.join(lm, "history.json")).get("history", [])
    plotted = plot_curves(history, os.path.join(workdir, "lm_curve.png"))
    lines = [
        "## Language model",
        "",
        "| what | value |",
        "|---|---|",
        f"| data | {_corpus(config)} ({metrics.get('train_tokens', 0):,} training tokens) |",
        f"| tokenizer | SentencePiece {config.tokenizer.model_type}, "
        f"{config.tokenizer.vocab_size:,} pieces, learned from the training text |",
        f"| model | GPT, {m.num_layers} layers, d {m.hidden_dim}, {m.num_heads} heads, "
        f"FFN {m.intermediate_dim}, context {m.max_length}: "
        f"{metrics.get('num_params', 0):,} parameters |",
        f"| training | {metrics.get('step')} steps × {config.train.batch_size} windows, "
        f"{config.train.optimizer} {config.train.learning_rate:g} "
        f"({config.train.lr_schedule}), {metrics.get('train_wall_seconds', 0):.0f} s, "
        f"{metrics.get('tokens_per_second', 0):,.0f} tokens/s |",
        f"| **held-out perplexity** | **{_num(metrics.get('full_eval_perplexity'), '.2f')}** "
        f"({metrics.get('full_eval_tokens', 0):,} tokens, per BPE token) |",
        "",
    ]
    if plotted:
        lines += ["![LM loss](lm_curve.png)", ""]
    samples = read_json(os.path.join(lm, "samples.json")).get("samples", [])
    for s in [s for s in samples if s["settings"] != "greedy"][:2]:
        lines += [f"Sample ({s['settings']}):", "", "```", s["prompt"] + s["completion"], "```", ""]
    parity = {
        "saved_model_match": saved.get("match"),
        "litert_perplexity": edge.get("perplexity"),
        "keras_perplexity": edge.get("keras_perplexity"),
        "litert_greedy_identical": edge.get("greedy", {}).get("identical"),
        "litert_decode_ms": edge.get("latency", {}).get("decode", {}).get("median_ms"),
        "litert_bytes": edge.get("size_bytes"),
    }
    return lines, {
        "perplexity": metrics.get("full_eval_perplexity"),
        "num_params": metrics.get("num_params"),
        "train_seconds": metrics.get("train_wall_seconds"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        **parity,
    }


def _classifier_section(variants: list[Variant], workdir: str) -> tuple[list[str], dict]:
    lines = [
        "## Text classifiers (SST-2)",
        "",
        "Trained on the bundled SST-2 train split, early numbers on its dev split, "
        "**scored on `test.tsv`** (872 sentences = GLUE dev). Parity: the SavedModel's "
        f"probabilities against Keras on {VERIFY_EXAMPLES} dev rows; the LiteRT `{EDGE_QUANTIZE}` "
        "file's accuracy against Keras on the same rows.",
        "",
        "| model | params | steps | train s | **test accuracy** | macro-F1 | ROC-AUC "
        "| SavedModel max \\|Δp\\| | LiteRT acc / Keras acc | LiteRT MB | LiteRT ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for v in variants:
        saved = read_json(os.path.join(v.workdir, "export", "saved_model", "verification.json"))
        t, e = v.test, v.edge
        latency = e.get("latency_batch1", {}).get("median_ms")
        lines.append(
            f"| {v.label} | {v.metrics.get('num_params', 0):,} | {v.metrics.get('step', '?')} "
            f"| {_num(v.metrics.get('train_wall_seconds'), '.0f')} | **{_pct(t.get('accuracy'))}** "
            f"| {_num(t.get('macro_f1'))} | {_num(t.get('roc_auc'))} "
            f"| {_num(saved.get('max_abs_diff'), '.2g') if saved else '—'} "
            f"| {_pct(e.get('accuracy'))} / {_pct(e.get('keras_accuracy'))} "
            f"| {_num(e.get('size_bytes', float('nan')) / 1e6, '.2f')} | {_num(latency, '.3f')} |"
        )
        results[v.label] = {
            "workdir": os.path.relpath(v.workdir, workdir),
            "test_accuracy": t.get("accuracy"),
            "test_macro_f1": t.get("macro_f1"),
            "test_roc_auc": t.get("roc_auc"),
            "num_params": v.metrics.get("num_params"),
            "litert_bytes": e.get("size_bytes"),
            "litert_gzip_bytes": e.get("gzip_bytes"),
            "litert_accuracy": e.get("accuracy"),
            "litert_ms": latency,
            "saved_model_max_abs_diff": saved.get("max_abs_diff"),
        }
    lines.append("")
    if _plot_classifier_curves(variants, os.path.join(workdir, "classifier_curves.png")):
        lines += ["![dev accuracy while training](classifier_curves.png)", ""]
    best = max(
        variants[: len(CLASSIFIER_PARTS)],
        key=lambda v: v.test.get("accuracy", -1.0),
        default=None,
    )
    if best and os.path.isfile(os.path.join(best.workdir, "confusion_matrix_test.png")):
        png = os.path.relpath(os.path.join(best.workdir, "confusion_matrix_test.png"), workdir)
        lines += [f"Confusion matrix of the best family ({best.label}), test split:", ""]
        lines += [f"![confusion matrix]({png})", ""]
    return lines, results


def _compression_section(
    variants: list[Variant], workdir: str, lm_config: ml_collections.ConfigDict
) -> list[str]:
    from tfllm.pipeline.compress_stage import compression_lines

    dense = next((v for v in variants if v.workdir == part_dir(workdir, FINETUNED)), None)
    lines = [
        "## Compression",
        "",
        "Every row is the LiteRT file that ships (dynamic-range int8 weights). "
        "Pruning fine-tunes with tfmot's polynomial schedule and magnitude masks; "
        "distillation trains a smaller transformer on the fine-tuned one's soft labels "
        "(temperature and mix in `pipeline_config.json`).",
        "",
        "| classifier | params | non-zero kernel weights | gzip bytes | × dense | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    compressed = [
        v for v in variants if os.path.isfile(os.path.join(v.workdir, "compression.json"))
    ]
    for v in ([dense] if dense else []) + compressed:
        record = read_json(os.path.join(v.workdir, "compression.json"))
        nonzero = (1 - record["sparsity"]) * 100 if record.get("method") == "prune" else 100.0
        ratio = (
            v.edge["gzip_bytes"] / dense.edge["gzip_bytes"]
            if dense and dense.edge and v.edge
            else float("nan")
        )
        lines.append(
            f"| {v.label} | {v.metrics.get('num_params', 0):,} | {nonzero:.1f}% "
            f"| {v.edge.get('gzip_bytes', 0):,} | {_num(ratio, '.2f')} "
            f"| {_pct(v.test.get('accuracy'))} |"
        )
    lines.append("")
    if _plot_pareto(variants, os.path.join(workdir, "pareto.png")):
        lines += ["![size vs accuracy](pareto.png)", ""]
    # The LM's dense-vs-pruned table, as its own pipeline prints it.
    lm_lines = compression_lines(part_dir(workdir, "lm"), lm_config)
    if lm_lines:
        lines += ["The language model, pruned:", ""] + lm_lines[2:]
    return lines


def _speed_section(workdir: str, variants: list[Variant], lm_edge: dict) -> list[str]:
    bench = read_json(os.path.join(workdir, "benchmark", "benchmarks.json"))
    lines = ["## Speed", ""]
    if bench:
        env = bench.get("environment", {})
        lines += [
            f"`tfllm-benchmark` at the GPT's dimensions on {env.get('cpu_model', '?')} "
            f"({env.get('cpu_count', '?')} cores), interleaved with keras-hub's `GPT2Backbone` "
            "at the same dimensions; medians. MFU counts 6N + 12·L·d·T FLOPs per token against "
            f"the {_num(bench.get('peak_gflops'), '.1f')} GFLOP/s a large "
            f"{bench.get('peak_dtype', 'float32')} matmul reached "
            "in the same run. A few timed steps: docs/benchmarks.md has the long runs.",
            "",
            "| what | tfllm | keras-hub | ratio |",
            "|---|---|---|---|",
            f"| training tokens/s | {_num(bench.get('train_tokens_per_second'), ',.0f')} "
            f"| {_num(bench.get('keras_hub_train_tokens_per_second'), ',.0f')} "
            f"| {_num(bench.get('train_speedup_vs_keras_hub'), '.2f')}× |",
            f"| MFU | {_num(bench.get('mfu'), '.2f')} | | |",
            f"| greedy decode, new tokens/s (KV cache) "
            f"| {_num(bench.get('decode_tokens_per_second'), ',.0f')} "
            f"| {_num(bench.get('keras_hub_decode_tokens_per_second'), ',.0f')} "
            f"| {_num(bench.get('decode_speedup_vs_keras_hub'), '.2f')}× |",
            "",
        ]
    if _plot_latency(variants, lm_edge, os.path.join(workdir, "latency.png")):
        lines += ["![LiteRT latency](latency.png)", ""]
    return lines


def _reproduce_lines(workdir: str, journey: ml_collections.ConfigDict, configs: dict) -> list[str]:
    lm = part_dir(workdir, "lm")
    lines = ["## Reproduce", "", "The whole journey (re-running skips what is done):", ""]
    lines += ["```", command_line(), "```", "", "Each number on its own:", "", "```"]
    lines += [
        f"tfllm-evaluate --workdir={lm}                      # LM perplexity",
        f"tfllm-generate --workdir={lm} --prompt={shlex.quote(sample_prompts(configs['lm'])[0])} "
        "--sampler=top_p --top_p=0.9 "
        "--temperature=0.8 --seed=1",
        f"tfllm-export --workdir={lm} --format=tflite --quantize={EDGE_QUANTIZE}",
    ]
    for part in CLASSIFIER_PARTS:
        lines.append(f"tfllm-evaluate --workdir={part_dir(workdir, part)} --split=test")
    teacher = part_dir(workdir, FINETUNED)
    pruned = pruned_dir(teacher, configs[FINETUNED])
    record = read_json(os.path.join(pruned, "compression.json"))
    if record:
        lines.append(
            f"tfllm-compress --workdir={teacher} --method=prune "
            f"--sparsity={record['settings']['sparsity']} --steps={record['steps']} "
            f"--output={pruned}"
        )
    lines += [
        benchmark_command(journey, configs["lm"], os.path.join(workdir, "benchmark", "b.json")),
        f"tensorboard --logdir {workdir}     # every part's curves, samples and hparams",
        "```",
        "",
    ]
    return lines


def write_journey_report(
    run: PipelineRun, journey: ml_collections.ConfigDict, configs: dict, path: str
) -> str:
    """Writes report.md (+ PNGs), results.json and report.html; returns the stage detail."""
    workdir = run.workdir
    variants = classifier_variants(workdir, configs)
    lm_lines, lm_results = _lm_section(workdir, configs["lm"])
    classifier_lines, classifier_results = _classifier_section(variants, workdir)
    _, lm_edge = _read(part_dir(workdir, "lm"))
    total = sum(r.seconds for r in run.results)
    best = max(
        classifier_results.items(),
        key=lambda kv: kv[1]["test_accuracy"] or -1.0,
        default=("n/a", {"test_accuracy": None}),
    )
    lines = [
        "# tfllm pipeline report",
        "",
        f"Workdir `{workdir}` · profile **{journey.profile}** · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · stages run this time: {total / 60:.1f} min",
        "",
        "| headline | value |",
        "|---|---|",
        f"| GPT held-out perplexity ({_corpus(configs['lm'])}) "
        f"| {_num(lm_results['perplexity'], '.2f')} |",
        f"| best SST-2 test accuracy | {_pct(best[1]['test_accuracy'])} ({best[0]}) |",
        f"| exports verified | SavedModel (strings in, text/probabilities out) and LiteRT "
        f"`{EDGE_QUANTIZE}` for every model |",
        "",
    ]
    lines += lm_lines + classifier_lines
    lines += _compression_section(variants, workdir, configs["lm"])
    lines += _speed_section(workdir, variants, lm_edge)
    lines += stage_lines(run.results) + [""]
    lines += _reproduce_lines(workdir, journey, configs)
    lines += environment_lines()
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(
        os.path.join(workdir, "results.json"),
        {
            "profile": journey.profile,
            "language_model": lm_results,
            "classifiers": classifier_results,
            "benchmark": {
                k: v
                for k, v in read_json(os.path.join(workdir, "benchmark", "benchmarks.json")).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            "stages": {r.name: round(r.seconds, 1) for r in run.results if not r.skipped},
            "machine": platform.platform(),
        },
    )
    html_path = write_html_report(path)
    return f"({path}, {html_path})"
