"""The pretrained journey's report: W/report.md, W/results.json and W/report.html.

Every number is read back from the parts' own files (import.json,
metrics.json, verification.json, compression.json, base_perplexity.json,
samples.json), so a report rebuilt after a resume shows what the first one did.
"""

from __future__ import annotations

import os
import platform
import shlex

import ml_collections

from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    PipelineRun,
    command_line,
    edge_dir,
    environment_lines,
    journey_heading,
    stage_lines,
)
from tfllm.pipeline.html_report import code_block, write_html_report
from tfllm.pipeline.journey_sections import fmt_num, fmt_pct
from tfllm.pipeline.pretrained_layout import layout, read_baseline, sources
from tfllm.utils.io import atomic_write_json, atomic_write_text, read_json


def write_pretrained_report(
    run: PipelineRun,
    journey: ml_collections.ConfigDict,
    lm: ml_collections.ConfigDict,
    path: str,
) -> str:
    """Writes report.md, results.json and report.html; returns the stage detail."""
    workdir = run.workdir
    paths = layout(workdir)
    results = collect_results(workdir)
    c, s, g = results["classifier"], results["student"], results["smollm2"]
    lines = journey_heading("tfllm pipeline report: pretrained models", run, journey.profile)
    lines += [
        f"| SST-2 test accuracy, MiniLM fine-tuned | {fmt_pct(c['test_accuracy'])} |",
        f"| SST-2 test accuracy, CNN student distilled from it | {fmt_pct(s['test_accuracy'])} "
        f"at {fmt_pct(s['latency_ratio'])} of the teacher's LiteRT latency |",
        f"| Tiny Shakespeare held-out perplexity, SmolLM2 imported → LoRA | "
        f"{fmt_num(g['base_perplexity'], '.2f')} → {fmt_num(g['perplexity'], '.2f')} "
        f"({fmt_num(_change(g) * 100 if _change(g) is not None else None, '+.1f')} %) |",
        f"| exports verified | {_verified(c, s)} |",
        "",
    ]
    lines += _imports_section(paths)
    lines += _classifier_section(c, s)
    lines += _lm_section(g, lm, paths["smollm2"])
    lines += stage_lines(run.results) + [""]
    lines += _reproduce_lines(journey, paths)
    lines += environment_lines()
    atomic_write_text(path, "\n".join(lines))
    stages = {r.name: round(r.seconds, 1) for r in run.results if not r.skipped}
    atomic_write_json(
        os.path.join(workdir, "results.json"),
        {"profile": journey.profile, **results, "stages": stages, "machine": platform.platform()},
    )
    html_path = write_html_report(path)
    return f"({path}, {html_path})"


def collect_results(workdir: str) -> dict:
    """The journey's numbers, read from the parts' files (None where a file is missing)."""
    paths = layout(workdir)
    teacher, student = _classifier(paths["minilm"]), _classifier(paths["student"])
    compression = read_json(os.path.join(paths["student"], "compression.json"))
    student["num_params"] = compression.get("num_params")
    ratio = None
    if teacher["latency_ms"] and student["latency_ms"]:
        ratio = student["latency_ms"] / teacher["latency_ms"]
    student["latency_ratio"] = ratio
    metrics = read_json(os.path.join(paths["smollm2"], "metrics.json"))
    baseline = read_baseline(workdir)
    lm = {
        "base_perplexity": baseline.get("perplexity"),
        "perplexity": metrics.get("full_eval_perplexity"),
        "held_out_tokens": metrics.get("full_eval_tokens"),
        "steps": metrics.get("step"),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "optimizer_state_bytes": metrics.get("optimizer_state_bytes"),
        "train_wall_seconds": metrics.get("train_wall_seconds"),
    }
    return {"classifier": teacher, "student": student, "smollm2": lm}


def _classifier(workdir: str) -> dict:
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    test = metrics.get("test_split", {})
    edge = read_json(os.path.join(edge_dir(workdir), "verification.json"))
    saved = read_json(os.path.join(workdir, "export", "saved_model", "verification.json"))
    return {
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "test_roc_auc": test.get("roc_auc"),
        "test_examples": test.get("num_examples"),
        "dev_accuracy": metrics.get("accuracy"),
        "num_params": metrics.get("num_params"),
        "train_wall_seconds": metrics.get("train_wall_seconds"),
        "saved_model_verified": saved.get("match"),
        "saved_model_max_abs_diff": saved.get("max_abs_diff"),
        "tflite_bytes": edge.get("size_bytes"),
        "tflite_accuracy": edge.get("accuracy"),
        "tflite_keras_accuracy": edge.get("keras_accuracy"),
        "tflite_verified": edge.get("match"),
        "latency_ms": edge.get("latency_batch1", {}).get("median_ms"),
    }


def _verified(teacher: dict, student: dict) -> str:
    """Which classifier exports passed their check against Keras when written."""
    checks = {
        "MiniLM SavedModel": teacher["saved_model_verified"],
        f"MiniLM LiteRT `{EDGE_QUANTIZE}`": teacher["tflite_verified"],
        f"CNN LiteRT `{EDGE_QUANTIZE}`": student["tflite_verified"],
    }
    return ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in checks.items())


def _change(lm: dict) -> float | None:
    if not lm["base_perplexity"] or not lm["perplexity"]:
        return None
    return lm["perplexity"] / lm["base_perplexity"] - 1


def _imports_section(paths: dict) -> list[str]:
    lines = [
        "## Imported checkpoints",
        "",
        "| model | family | format | parameters | vocabulary | import s |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("minilm_import", "smollm2_import"):
        record = read_json(os.path.join(paths[name], "import.json"))
        lines.append(
            f"| `{os.path.basename(record.get('source', '?'))}` | {record.get('family', '?')} "
            f"| {record.get('format', '?')} | {fmt_num(record.get('num_params'), ',')} "
            f"| {fmt_num(record.get('vocab_size'), ',')} "
            f"| {fmt_num(record.get('seconds'), '.1f')} |"
        )
    return lines + [""]


def _classifier_section(teacher: dict, student: dict) -> list[str]:
    def row(name: str, r: dict) -> str:
        verified = {True: "yes", False: "NO"}.get(r["tflite_verified"], "n/a")
        return (
            f"| {name} | {fmt_num(r['num_params'], ',')} | {fmt_pct(r['dev_accuracy'])} "
            f"| {fmt_pct(r['test_accuracy'])} | {fmt_pct(r['test_macro_f1'])} "
            f"| {fmt_num(r['test_roc_auc'])} | {fmt_num(r['train_wall_seconds'], '.0f')} "
            f"| {fmt_num((r['tflite_bytes'] or 0) / 1e6, '.1f')} "
            f"| {fmt_num(r['latency_ms'], '.2f')} | {verified} |"
        )

    return [
        "## SST-2 classifiers",
        "",
        f"Test split: {fmt_num(teacher['test_examples'], ',')} sentences (GLUE's dev set); "
        "dev: the rows held out of GLUE's train set. LiteRT latency: the verified "
        f"`{EDGE_QUANTIZE}` file, one row per call, one thread, median of 100.",
        "",
        "| model | parameters | dev acc | test acc | test macro F1 | test ROC-AUC | train s "
        "| LiteRT MB | LiteRT ms | LiteRT = Keras |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row("MiniLM (all-MiniLM-L6-v2) fine-tuned", teacher),
        row("Kim CNN distilled from it", student),
        "",
    ]


def _lm_section(lm: dict, config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    t = config.train
    lines = [
        "## SmolLM2-135M-Instruct, LoRA on Tiny Shakespeare",
        "",
        "| what | value |",
        "|---|---|",
        f"| fine-tune | LoRA rank {t.lora_rank} on `{t.lora_targets}` kernels, {lm['steps']} "
        f"steps × {t.batch_size} × {config.model.max_length} tokens, lr {t.learning_rate} |",
        f"| trainable parameters | {fmt_num(lm['trainable_params'], ',')} of "
        f"{fmt_num(lm['total_params'], ',')} |",
        f"| optimizer state | {fmt_num((lm['optimizer_state_bytes'] or 0) / 1e6, '.1f')} MB |",
        f"| held-out perplexity, imported | {fmt_num(lm['base_perplexity'], '.2f')} |",
        f"| held-out perplexity, fine-tuned | {fmt_num(lm['perplexity'], '.2f')} "
        f"({fmt_num(lm['held_out_tokens'], ',')} tokens, context {config.model.max_length}) |",
        f"| training wall time | {fmt_num(lm['train_wall_seconds'], '.0f')} s |",
        "",
        "### Samples",
        "",
    ]
    samples = read_json(os.path.join(workdir, "samples.json")).get("samples", [])
    for s in samples:
        lines += [f"**{s['settings']}**", "", *code_block(s["prompt"] + s["completion"]), ""]
    return lines


def _reproduce_lines(journey: ml_collections.ConfigDict, paths: dict) -> list[str]:
    """The pipeline command, and each part as the standalone commands that make it."""
    files = sources(journey)
    lm_flags = " ".join(f"--config.{k}={shlex.quote(str(v))}" for k, v in _flat(journey.smollm2))
    student_steps = journey.distil.student.train.num_steps
    commands = [
        command_line(),
        "",
        "# the same parts, one command each:",
        f"tfllm-import --source={files['minilm']} --workdir={paths['minilm_import']}",
        f"tfllm-import --source={files['smollm2']} --workdir={paths['smollm2_import']}",
        f"tfllm-train --config=configs/minilm_sst2_short.py --workdir={paths['minilm']} "
        f"--config.train.init_from={paths['minilm_import']} "
        f"--config.train.num_steps={journey.minilm.train.num_steps}",
        f"tfllm-evaluate --workdir={paths['minilm']} --split=test",
        f"tfllm-export --workdir={paths['minilm']} --format=tflite --quantize={EDGE_QUANTIZE}",
        f"tfllm-compress --workdir={paths['minilm']} --method=distill "
        "--student_config=configs/cnn_minilm_student.py --student_embeddings=teacher "
        f"--steps={student_steps} --output={paths['student']}",
        f"tfllm-train --config={paths['smollm2_import']}/config.json "
        f"--config.train.init_from={paths['smollm2_import']} --workdir={paths['smollm2']} "
        + lm_flags,
        f"tfllm-evaluate --workdir={paths['smollm2']}",
    ]
    return ["## Reproduce", "", *code_block("\n".join(commands)), ""]


def _flat(config: ml_collections.ConfigDict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
