"""The journey report's sections: markdown lines (and results.json entries) per part.

Each section reads its numbers back from the parts' files (see
journey_results) and draws its plot (journey_plots) beside report.md. Text
taken from files is quoted so that it stays text: samples go in a code block
whose fence they cannot close.
"""

from __future__ import annotations

import math
import os
import shlex

import ml_collections

from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    VERIFY_EXAMPLES,
    command_line,
    plot_curves,
)
from tfllm.pipeline.compress_stage import compression_lines, pruned_dir
from tfllm.pipeline.html_report import code_block
from tfllm.pipeline.journey_layout import CLASSIFIER_PARTS, FINETUNED, benchmark_command, part_dir
from tfllm.pipeline.journey_plots import plot_classifier_curves, plot_latency, plot_pareto
from tfllm.pipeline.journey_results import Variant, read_part
from tfllm.pipeline.lm_pipeline import sample_prompts
from tfllm.utils.io import read_json


def fmt_num(value: object, fmt: str = ".4f") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return format(value, fmt)


def fmt_pct(value: object) -> str:
    return fmt_num(value * 100, ".2f") + " %" if isinstance(value, int | float) else "n/a"


def corpus_name(config: ml_collections.ConfigDict) -> str:
    if config.data.train_path:
        return f"`{config.data.train_path}`"
    return {
        "shakespeare": "bundled Tiny Shakespeare",
        "sst2": "bundled SST-2 train sentences, labels unused",
    }.get(config.data.dataset, f"bundled {config.data.dataset}")


def lm_section(workdir: str, config: ml_collections.ConfigDict) -> tuple[list[str], dict]:
    lm = part_dir(workdir, "lm")
    metrics, edge = read_part(lm)
    saved = read_json(os.path.join(lm, "export", "saved_model", "verification.json"))
    m = config.model
    history = read_json(os.path.join(lm, "history.json")).get("history", [])
    plotted = plot_curves(history, os.path.join(workdir, "lm_curve.png"))
    lines = [
        "## Language model",
        "",
        "| what | value |",
        "|---|---|",
        f"| data | {corpus_name(config)} ({metrics.get('train_tokens', 0):,} training tokens) |",
        f"| tokenizer | SentencePiece {config.tokenizer.model_type}, "
        f"{config.tokenizer.vocab_size:,} pieces, learned from the training text |",
        f"| model | GPT, {m.num_layers} layers, d {m.hidden_dim}, {m.num_heads} heads, "
        f"FFN {m.intermediate_dim}, context {m.max_length}: "
        f"{metrics.get('num_params', 0):,} parameters |",
        f"| training | {metrics.get('step')} steps × {config.train.batch_size} windows, "
        f"{config.train.optimizer} {config.train.learning_rate:g} "
        f"({config.train.lr_schedule}), {metrics.get('train_wall_seconds', 0):.0f} s, "
        f"{metrics.get('tokens_per_second', 0):,.0f} tokens/s |",
        f"| **held-out perplexity** | **{fmt_num(metrics.get('full_eval_perplexity'), '.2f')}** "
        f"({metrics.get('full_eval_tokens', 0):,} tokens, per BPE token) |",
        "",
    ]
    if plotted:
        lines += ["![LM loss](lm_curve.png)", ""]
    samples = read_json(os.path.join(lm, "samples.json")).get("samples", [])
    for s in [s for s in samples if s["settings"] != "greedy"][:2]:
        lines += [f"Sample ({s['settings']}):", "", *code_block(s["prompt"] + s["completion"]), ""]
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


def classifier_section(variants: list[Variant], workdir: str) -> tuple[list[str], dict]:
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
            f"| {fmt_num(v.metrics.get('train_wall_seconds'), '.0f')} "
            f"| **{fmt_pct(t.get('accuracy'))}** "
            f"| {fmt_num(t.get('macro_f1'))} | {fmt_num(t.get('roc_auc'))} "
            f"| {fmt_num(saved.get('max_abs_diff'), '.2g') if saved else '—'} "
            f"| {fmt_pct(e.get('accuracy'))} / {fmt_pct(e.get('keras_accuracy'))} "
            f"| {fmt_num(e.get('size_bytes', float('nan')) / 1e6, '.2f')} "
            f"| {fmt_num(latency, '.3f')} |"
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
    if plot_classifier_curves(variants, os.path.join(workdir, "classifier_curves.png")):
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


def compression_section(
    variants: list[Variant], workdir: str, lm_config: ml_collections.ConfigDict
) -> list[str]:
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
            f"| {v.edge.get('gzip_bytes', 0):,} | {fmt_num(ratio, '.2f')} "
            f"| {fmt_pct(v.test.get('accuracy'))} |"
        )
    lines.append("")
    if plot_pareto(variants, os.path.join(workdir, "pareto.png")):
        lines += ["![size vs accuracy](pareto.png)", ""]
    # The LM's dense-vs-pruned table, as its own pipeline prints it.
    lm_lines = compression_lines(part_dir(workdir, "lm"), lm_config)
    if lm_lines:
        lines += ["The language model, pruned:", ""] + lm_lines[2:]
    return lines


def speed_section(workdir: str, variants: list[Variant], lm_edge: dict) -> list[str]:
    bench = read_json(os.path.join(workdir, "benchmark", "benchmarks.json"))
    lines = ["## Speed", ""]
    if bench:
        env = bench.get("environment", {})
        lines += [
            f"`tfllm-benchmark` at the GPT's dimensions on {env.get('cpu_model', '?')} "
            f"({env.get('cpu_count', '?')} cores), interleaved with keras-hub's `GPT2Backbone` "
            "at the same dimensions; medians. MFU counts 6N + 12·L·d·T FLOPs per token against "
            f"the {fmt_num(bench.get('peak_gflops'), '.1f')} GFLOP/s a large "
            f"{bench.get('peak_dtype', 'float32')} matmul reached "
            "in the same run (the higher of its start and end). Decode is compared with "
            "keras-hub's `generate` as configured by default and with XLA forced on; the "
            "ratio against the faster of the two is the headline. A few timed steps: "
            "docs/benchmarks.md has the long runs.",
            "",
            "| what | tfllm | keras-hub | ratio |",
            "|---|---|---|---|",
            f"| training tokens/s | {fmt_num(bench.get('train_tokens_per_second'), ',.0f')} "
            f"| {fmt_num(bench.get('keras_hub_train_tokens_per_second'), ',.0f')} "
            f"| {fmt_num(bench.get('train_speedup_vs_keras_hub'), '.2f')}× |",
            f"| MFU | {fmt_num(bench.get('mfu'), '.2f')} | | |",
            f"| greedy decode, new tokens/s (KV cache) "
            f"| {fmt_num(bench.get('decode_tokens_per_second'), ',.0f')} "
            f"| {fmt_num(bench.get('keras_hub_decode_tokens_per_second'), ',.0f')} (default) / "
            f"{fmt_num(bench.get('keras_hub_xla_decode_tokens_per_second'), ',.0f')} (XLA) "
            f"| **{fmt_num(bench.get('decode_speedup_headline'), '.2f')}×** "
            f"({fmt_num(bench.get('decode_speedup_vs_keras_hub'), '.2f')}× / "
            f"{fmt_num(bench.get('decode_speedup_vs_keras_hub_xla'), '.2f')}×) |",
            "",
        ]
    if plot_latency(variants, lm_edge, os.path.join(workdir, "latency.png")):
        lines += ["![LiteRT latency](latency.png)", ""]
    return lines


def reproduce_lines(workdir: str, journey: ml_collections.ConfigDict, configs: dict) -> list[str]:
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
