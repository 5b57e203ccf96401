"""The language-model journey as resumable stages, and its report.

Stages (each skipped when its output exists and was made from the current config
and checkpoint, unless forced; see tfllm.pipeline.stamps):
  train    — learn the tokenizer, pretrain the GPT (resumes from checkpoints)
  evaluate — perplexity on the held-out split
  samples  — generated text (greedy and nucleus) → samples.json
  export   — verified SavedModel → export/saved_model/
  tflite   — verified LiteRT file (dynamic-range int8) → export/tflite_dynamic/
  compress — prune 50% (tfllm-compress) → compressed/prune50/, exported the same way
  report   — report.md + loss curve PNG, and a self-contained report.html
"""

from __future__ import annotations

import os
import shlex
import time

import ml_collections

from tfllm.pipeline import compress_stage
from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    PipelineRun,
    StageResult,
    command_line,
    edge_dir,
    environment_lines,
    export_edge,
    plot_curves,
    run_single_model,
    stage_lines,
    train_stage,
)
from tfllm.pipeline.html_report import code_block, write_html_report
from tfllm.pipeline.stamps import Stamp, checkpoint_identity
from tfllm.utils.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["STAGES", "WORK_STAGES", "PipelineRun", "StageResult", "run_lm_stages", "run_pipeline"]

WORK_STAGES = ("train", "evaluate", "samples", "export", "tflite", "compress")
STAGES = (*WORK_STAGES, "report")


def run_pipeline(config: ml_collections.ConfigDict, workdir: str, force: set[str]) -> str:
    """Runs every stage; returns the path of report.md."""
    return run_single_model(config, workdir, force, STAGES, run_lm_stages, _report)


def run_lm_stages(
    run: PipelineRun,
    config: ml_collections.ConfigDict,
    workdir: str,
    prefix: str = "",
    stages: tuple[str, ...] = WORK_STAGES,
) -> None:
    """The LM's work stages (those in `stages`) inside `run`, named `prefix + stage`.

    `tfllm-pipeline` with an LM config runs them all under its own progress;
    the journey runs them as its `lm.*` stages.
    """
    from tfllm.compress.run import training_plugins
    from tfllm.training.run import train_lm

    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.json")

    stage = run.part(prefix, stages)

    def train() -> str:
        metrics = train_lm(config, workdir, training_plugins(config))
        perplexity = metrics.get("perplexity", float("nan"))
        return f"(step {metrics['step']}, eval perplexity {perplexity:.2f})"

    train_stage(run, stage, prefix, config, workdir, train)
    metrics = read_json(metrics_path)
    # What every later stage reads: the checkpoint training left (and its config).
    upstream = {"checkpoint": checkpoint_identity(workdir)}
    stage(
        "evaluate",
        "full_eval_step" in metrics and metrics["full_eval_step"] == metrics.get("step"),
        lambda: _evaluate(workdir),
        Stamp({"config.data": config.data}, upstream),
    )
    samples_path = os.path.join(workdir, "samples.json")
    stage(
        "samples",
        os.path.isfile(samples_path),
        lambda: _samples(workdir, samples_path),
        Stamp({"sample settings": _sample_settings(config)}, upstream),
    )
    export = {"config.export": config.export}
    verification = os.path.join(workdir, "export", "saved_model", "verification.json")
    stage("export", os.path.isfile(verification), lambda: _export(workdir), Stamp(export, upstream))
    tflite_record = os.path.join(edge_dir(workdir), "verification.json")
    stage(
        "tflite",
        os.path.isfile(tflite_record),
        lambda: _tflite(workdir),
        Stamp({**export, "quantize": EDGE_QUANTIZE}, upstream),
    )
    pruning = compress_stage.stamp(workdir, config)
    stage(
        "compress",
        compress_stage.done(workdir, config),
        lambda: compress_stage.run_compress_stage(
            workdir, config, run.stale(prefix + "compress", pruning)
        ),
        pruning,
    )


def _evaluate(workdir: str) -> str:
    """The whole eval split (not the trainer's sampled batches), filed as `full_eval_*`."""
    from tfllm.evaluation.workdir import evaluate_workdir, record_evaluation

    evaluation = evaluate_workdir(workdir, split="eval")
    evaluation.keys = {
        "loss": "full_eval_loss",
        "perplexity": "full_eval_perplexity",
        "tokens": "full_eval_tokens",
    }
    record_evaluation(evaluation, full_eval_step=evaluation.trained.step)
    result = evaluation.metrics
    return f"(perplexity {result['perplexity']:.2f} on {result['tokens']:,} held-out tokens)"


SAMPLE_SETTINGS = (
    ("greedy", dict(sampler="greedy")),
    ("top_p 0.9, T 0.8, seed 1", dict(sampler="top_p", top_p=0.9, temperature=0.8, seed=1)),
)
SAMPLE_PROMPTS = ("ROMEO:", "JULIET:\nO", "First Citizen:\n")


def sample_prompts(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Play-script prompts for Tiny Shakespeare; the recipe's own prompts for other text."""
    if config.data.dataset == "shakespeare" and not config.data.train_path:
        return SAMPLE_PROMPTS
    return tuple(config.train.sample_prompts) or ("",)


def sample_tokens(config: ml_collections.ConfigDict) -> int:
    """96 new tokens, or fewer where the context is short (prompts keep some of it)."""
    return max(8, min(96, int(config.model.max_length) - 16))


def _sample_settings(config: ml_collections.ConfigDict) -> dict:
    """What `_samples` generates with: its stamp's config."""
    return {
        "settings": SAMPLE_SETTINGS,
        "prompts": sample_prompts(config),
        "max_new_tokens": sample_tokens(config),
    }


def _samples(workdir: str, path: str) -> str:
    from tfllm.inference.generate import Generator, generate_text
    from tfllm.inference.loading import load_trained

    trained = load_trained(workdir)
    generator = Generator(trained.model)
    prompts, new_tokens = sample_prompts(trained.config), sample_tokens(trained.config)
    records = []
    t0 = time.perf_counter()
    for label, settings in SAMPLE_SETTINGS:
        outs = generate_text(generator, trained.tokenizer, list(prompts), new_tokens, **settings)
        for prompt, out in zip(prompts, outs, strict=True):
            records.append({"settings": label, "prompt": prompt, "completion": out})
            print(f"--- {label} ---\n{prompt}{out}\n", flush=True)
    atomic_write_json(
        path,
        {"samples": records, "max_new_tokens": new_tokens, "seconds": time.perf_counter() - t0},
    )
    return f"({len(records)} samples)"


def _export(workdir: str) -> str:
    """`tfllm-export`: the SavedModel, its greedy text checked against Keras's."""
    from tfllm.export.workdir import export_workdir

    export = export_workdir(workdir, "saved_model")
    prompts = len(export.trained.config.export.verify_prompts)
    return f"(verified on {prompts} prompts, {export.record['size_bytes'] / 1e6:.1f} MB)"


def _tflite(workdir: str) -> str:
    record = export_edge(workdir)
    return (
        f"({EDGE_QUANTIZE}: {record['size_bytes'] / 1e6:.1f} MB, perplexity "
        f"{record['perplexity']:.2f} vs Keras {record['keras_perplexity']:.2f})"
    )


def _tflite_lines(workdir: str) -> list[str]:
    record = read_json(os.path.join(edge_dir(workdir), "verification.json"))
    if not record:
        return []
    return [
        "",
        f"LiteRT `export/tflite_{EDGE_QUANTIZE}/model.tflite` (signatures "
        f"{', '.join(sorted(record['signatures']))}; see docs/edge.md):",
        "",
        "| file bytes | gzip bytes | perplexity (file) | perplexity (Keras) | max \\|Δ logit\\| "
        "| decode ms (median of 100) | greedy text = Keras |",
        "|---|---|---|---|---|---|---|",
        f"| {record['size_bytes']:,} | {record['gzip_bytes']:,} | {record['perplexity']:.3f} "
        f"| {record['keras_perplexity']:.3f} | {record['max_abs_diff']:.3g} "
        f"| {record['latency']['decode']['median_ms']:.2f} "
        f"| {'yes' if record['greedy']['identical'] else 'no'} |",
        "",
    ]


def _report(run: PipelineRun, path: str) -> str:
    workdir, config = run.workdir, run.config
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    history = read_json(os.path.join(workdir, "history.json")).get("history", [])
    samples = read_json(os.path.join(workdir, "samples.json")).get("samples", [])
    verification = read_json(os.path.join(workdir, "export", "saved_model", "verification.json"))
    plotted = plot_curves(history, os.path.join(workdir, "loss_curve.png"))
    m = config.model
    command = command_line()
    lines = [
        "# tfllm pipeline report",
        "",
        f"Workdir `{workdir}` · {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Language model",
        "",
        "| what | value |",
        "|---|---|",
        f"| data | {config.data.train_path or 'bundled ' + config.data.dataset} "
        f"({metrics.get('train_tokens', '?'):,} training tokens) |",
        f"| tokenizer | SentencePiece {config.tokenizer.model_type}, vocab "
        f"{config.tokenizer.vocab_size} |",
        f"| model | GPT, {m.num_layers} layers, d {m.hidden_dim}, {m.num_heads} heads, "
        f"FFN {m.intermediate_dim}, context {m.max_length}, "
        f"{metrics.get('num_params', 0):,} parameters |",
        f"| training | {metrics.get('step')} steps × batch {config.train.batch_size}, "
        f"{config.train.optimizer} lr {config.train.learning_rate} ({config.train.lr_schedule}) |",
        f"| final train loss | {metrics.get('loss', float('nan')):.4f} |",
        f"| held-out perplexity (full split) | "
        f"{metrics.get('full_eval_perplexity', float('nan')):.2f} |",
        f"| training speed | {metrics.get('tokens_per_second', 0):,.0f} tokens/s (median) |",
        f"| training wall time | {metrics.get('train_wall_seconds', 0):.0f} s |",
        "",
    ]
    if plotted:
        lines += ["![loss curve](loss_curve.png)", ""]
    lines += ["## Samples", ""]
    for s in samples:
        lines += [
            f"**{s['settings']}** — prompt `{s['prompt']!r}`",
            "",
            *code_block(s["prompt"] + s["completion"]),  # a completion cannot close it
            "",
        ]
    lines += ["## Export", ""]
    if verification:
        lines += [
            f"SavedModel `export/saved_model/` ({verification['size_bytes'] / 1e6:.1f} MB), "
            f"signatures {', '.join(verification['signatures'])}.",
            f"Verification: {verification['check']} on {len(verification['prompts'])} prompts: "
            f"**{'match' if verification['match'] else 'MISMATCH'}**.",
            "",
        ]
    lines += _tflite_lines(workdir)
    lines += compress_stage.compression_lines(workdir, config)
    lines += stage_lines(run.results)
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        command,
        f"tfllm-evaluate --workdir={workdir}",
        f"tfllm-export --workdir={workdir} --format=tflite --quantize={EDGE_QUANTIZE}",
        f"tfllm-generate --workdir={workdir} --prompt={shlex.quote(sample_prompts(config)[0])} "
        "--sampler=top_p --top_p=0.9 "
        "--temperature=0.8 --seed=1",
        f"tensorboard --logdir {os.path.join(workdir, 'tensorboard')}",
        "```",
        "",
    ]
    lines += environment_lines()
    atomic_write_text(path, "\n".join(lines))
    html_path = write_html_report(path)
    return f"({path}, {html_path})"
