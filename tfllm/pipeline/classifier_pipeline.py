"""The text-classifier journey as resumable stages, and its report.

Stages (each skipped when its output exists and was made from the current config
and checkpoint, unless forced; see tfllm.pipeline.stamps):
  train    — learn the tokenizer and label vocabulary, train the classifier
  evaluate — the full metric set on the test split (the eval split if there is
             none) → metrics.json `test_split` + confusion_matrix_test.png
  export   — verified classifier SavedModel → export/saved_model/
  tflite   — verified LiteRT file (dynamic-range int8) → export/tflite_dynamic/
  compress — prune 80% (tfllm-compress) → compressed/prune80/, exported the same way
  report   — report.md + loss/accuracy curve PNG, and a self-contained report.html

Every stage calls the same library code as `tfllm-train`, `tfllm-evaluate
--split=test` and `tfllm-export`, so the report's numbers are the ones those
commands print.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time

import ml_collections

from tfllm.pipeline import compress_stage
from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    VERIFY_EXAMPLES,
    PipelineRun,
    command_line,
    edge_dir,
    environment_lines,
    export_edge,
    plot_curves,
    run_single_model,
    stage_lines,
    train_stage,
)
from tfllm.pipeline.html_report import write_html_report
from tfllm.pipeline.stamps import Stamp, checkpoint_identity
from tfllm.utils.io import atomic_write_text, read_json

WORK_STAGES = ("train", "evaluate", "export", "tflite", "compress")
STAGES = (*WORK_STAGES, "report")


def run_classifier_pipeline(
    config: ml_collections.ConfigDict, workdir: str, force: set[str]
) -> str:
    """Runs every stage; returns the path of report.md."""
    return run_single_model(config, workdir, force, STAGES, run_classifier_stages, _report)


def run_classifier_stages(
    run: PipelineRun,
    config: ml_collections.ConfigDict,
    workdir: str,
    prefix: str = "",
    stages: tuple[str, ...] = WORK_STAGES,
    test_pruned: bool = False,
) -> None:
    """The classifier's work stages (those in `stages`) inside `run`, named `prefix + stage`.

    `tfllm-pipeline` with a classifier config runs them all under its own
    progress; the journey runs them as its `<family>.*` stages, and scores the
    pruned model on the test split too (`test_pruned`), so its compression
    table compares dense and pruned on the same sentences.
    """
    from tfllm.compress.run import training_plugins
    from tfllm.training.run import train

    os.makedirs(workdir, exist_ok=True)
    stage = run.part(prefix, stages)

    def train_model() -> str:
        metrics = train(config, workdir, training_plugins(config))
        accuracy = metrics.get("accuracy", float("nan"))
        return f"(step {metrics['step']}, eval accuracy {accuracy:.4f})"

    train_stage(run, stage, prefix, config, workdir, train_model)
    # What every later stage reads: the checkpoint training left (and its config).
    upstream = {"checkpoint": checkpoint_identity(workdir)}
    stage(
        "evaluate",
        tested(workdir),
        lambda: evaluate_test_split(workdir),
        Stamp({"config.data": config.data}, upstream),
    )
    export = {"config.export": config.export, "verify_examples": VERIFY_EXAMPLES}
    verification = os.path.join(workdir, "export", "saved_model", "verification.json")
    stage("export", os.path.isfile(verification), lambda: _export(workdir), Stamp(export, upstream))
    edge_record = os.path.join(edge_dir(workdir), "verification.json")
    stage(
        "tflite",
        os.path.isfile(edge_record),
        lambda: _tflite(workdir),
        Stamp({**export, "quantize": EDGE_QUANTIZE}, upstream),
    )
    pruned = compress_stage.pruned_dir(workdir, config)

    pruning = compress_stage.stamp(workdir, config, test_split=test_pruned)

    def compress() -> str:
        stale = run.stale(prefix + "compress", pruning)
        detail = compress_stage.run_compress_stage(workdir, config, stale)
        if test_pruned:
            detail += " " + evaluate_test_split(pruned)
        return detail

    stage(
        "compress",
        compress_stage.done(workdir, config) and (not test_pruned or tested(pruned)),
        compress,
        pruning,
    )


def tested(workdir: str) -> bool:
    """The workdir's final checkpoint has been scored on the test split."""
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    step = metrics.get("test_split", {}).get("step")
    return step is not None and step == metrics.get("step")


def evaluate_test_split(workdir: str) -> str:
    """`tfllm-evaluate --split=test` (or the eval split when the data has no test split)."""
    from tfllm.data.classification_data import load_labelled_splits
    from tfllm.evaluation.classification import format_metrics_table
    from tfllm.evaluation.workdir import evaluate_workdir, record_evaluation
    from tfllm.inference.loading import load_trained

    trained = load_trained(workdir)
    splits = load_labelled_splits(trained.config.data)
    if splits.test is not None:
        name = "test"
    elif splits.eval is not None:
        name = "eval"
    else:
        return "(no test or eval split: nothing to evaluate)"
    evaluation = evaluate_workdir(trained, split=name)
    result = evaluation.metrics
    print(format_metrics_table(result), flush=True)
    # The layout `tfllm-evaluate --split=test` writes, plus the step it describes.
    evaluation.slot = "test_split"
    record_evaluation(evaluation, step=trained.step)
    return (
        f"({name} accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f} "
        f"on {result['num_examples']:,} examples)"
    )


def _export(workdir: str) -> str:
    """`tfllm-export`: the SavedModel, verified on up to VERIFY_EXAMPLES eval rows."""
    from tfllm.export.workdir import export_workdir

    record = export_workdir(workdir, "saved_model", verify_examples=VERIFY_EXAMPLES).record
    return (
        f"(verified on {record['examples']} rows, max |Δp| {record['max_abs_diff']:.2g}, "
        f"{record['size_bytes'] / 1e6:.1f} MB)"
    )


def _tflite(workdir: str) -> str:
    """`tfllm-export --format=tflite --quantize=dynamic`, verified on VERIFY_EXAMPLES rows."""
    record = export_edge(workdir)
    return (
        f"({EDGE_QUANTIZE}: {record['size_bytes'] / 1e6:.2f} MB, accuracy "
        f"{record['accuracy']:.4f} vs Keras {record['keras_accuracy']:.4f} "
        f"on {record['examples']} rows)"
    )


def _tflite_lines(workdir: str) -> list[str]:
    record = read_json(os.path.join(edge_dir(workdir), "verification.json"))
    if not record:
        return []
    latency = record.get("latency_batch1", {}).get("median_ms")
    return [
        f"LiteRT `export/tflite_{EDGE_QUANTIZE}/model.tflite` (docs/edge.md):",
        "",
        "| file bytes | gzip bytes | accuracy (file) | accuracy (Keras) | max \\|Δp\\| "
        "| latency ms (batch 1, median of 100) |",
        "|---|---|---|---|---|---|",
        f"| {record['size_bytes']:,} | {record['gzip_bytes']:,} | {_num(record.get('accuracy'))} "
        f"| {_num(record.get('keras_accuracy'))} | {_num(record.get('max_abs_diff'), '.3g')} "
        f"| {_num(latency, '.3f')} |",
        "",
    ]


def _num(value: object, fmt: str = ".4f") -> str:
    """A metric for a table cell; missing or undefined values read "n/a"."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return format(value, fmt)


def _model_summary(m: ml_collections.ConfigDict) -> str:
    """The architecture settings that matter for each classifier family."""
    if m.name == "mlp_classifier":
        shape = f"embedding {m.embedding_dim}, hidden {list(m.mlp_hidden_dims)}"
    elif m.name == "cnn_classifier":
        shape = (
            f"embedding {m.embedding_dim}, widths {list(m.conv_widths)} × {m.conv_filters} "
            f"filters, {m.cnn_pooling} pooling"
        )
    else:
        shape = (
            f"{m.num_layers} layers, d {m.hidden_dim}, {m.num_heads} heads, "
            f"FFN {m.intermediate_dim}, {m.pooling} pooling"
        )
    return f"{m.name}: {shape}, dropout {m.dropout}, context {m.max_length}"


def _data_summary(config: ml_collections.ConfigDict, metrics: dict) -> str:
    d = config.data
    if d.train_path:
        source = f"`{d.train_path}`"
        if d.eval_path:
            source += f", eval `{d.eval_path}`"
        if d.test_path:
            source += f", test `{d.test_path}`"
    else:
        source = f"bundled {d.dataset}"
    examples = metrics.get("train_examples")
    return source + (f" ({examples:,} training examples)" if isinstance(examples, int) else "")


def _reproduce_commands(workdir: str, split: str) -> list[str]:
    """tfllm-train with this run's --config and overrides, then evaluate and export."""
    keep = [a for a in sys.argv[1:] if not a.startswith(("--force", "--noforce", "--debug"))]
    if not any(a == "--config" or a.startswith("--config=") for a in keep):
        keep.insert(0, "--config=configs/pipeline.py")  # the pipeline's default config file
    train = " ".join(shlex.quote(a) for a in ["tfllm-train", *keep])
    w = shlex.quote(workdir)
    return [
        train,
        f"tfllm-evaluate --workdir={w} --split={split}",
        f"tfllm-export --workdir={w}",
        f"tfllm-export --workdir={w} --format=tflite --quantize={EDGE_QUANTIZE}",
    ]


def _report(run: PipelineRun, path: str) -> str:
    from tfllm.utils.argv import command_name

    workdir, config = run.workdir, run.config
    metrics = read_json(os.path.join(workdir, "metrics.json"))
    history = read_json(os.path.join(workdir, "history.json")).get("history", [])
    verification = read_json(os.path.join(workdir, "export", "saved_model", "verification.json"))
    labels = read_json(os.path.join(workdir, "labels.json"))
    plotted = plot_curves(
        history,
        os.path.join(workdir, "loss_curve.png"),
        ylabel="cross-entropy (nats/example)",
        eval_label="eval loss",
        score_keys=(("accuracy", "eval accuracy"), ("macro_f1", "eval macro F1")),
    )
    evaluated = metrics.get("test_split", {})
    test_name = evaluated.get("source", "test")
    test = evaluated if test_name == "test" else {}  # the results table's test column
    t, c = config.train, config.tokenizer
    class_names = labels.get("names") or list(evaluated.get("per_class", {}))
    lines = [
        "# tfllm pipeline report",
        "",
        f"Workdir `{workdir}` · {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"Command: `{command_line(command_name())}`",
        "",
        "## Classifier",
        "",
        "| what | value |",
        "|---|---|",
        f"| data | {_data_summary(config, metrics)} |",
        f"| classes | {len(class_names)}: {', '.join(class_names)} |",
        f"| tokenizer | SentencePiece {c.model_type}, vocab {c.vocab_size} |",
        f"| model | {_model_summary(config.model)} |",
        f"| training | {metrics.get('step')} steps × batch {t.batch_size}, {t.optimizer} lr "
        f"{t.learning_rate} ({t.lr_schedule}), class weights {t.class_weights} |",
        "",
        "## Results",
        "",
        "| metric | eval | test |",
        "|---|---|---|",
    ]
    rows = (
        ("accuracy", "accuracy", "accuracy"),
        ("macro F1", "macro_f1", "macro_f1"),
        ("ROC-AUC", "roc_auc", "roc_auc"),
        ("log loss", "eval_loss", "log_loss"),
    )
    for label, eval_key, test_key in rows:
        lines.append(f"| {label} | {_num(metrics.get(eval_key))} | {_num(test.get(test_key))} |")
    lines += [
        f"| examples | {metrics.get('num_examples', 'n/a')} | {test.get('num_examples', 'n/a')} |",
        "",
        "| what | value |",
        "|---|---|",
        f"| parameters | {metrics.get('num_params', 0):,} |",
        f"| training wall time | {metrics.get('train_wall_seconds', 0):.0f} s |",
        f"| training speed | {metrics.get('examples_per_second', 0):,.0f} examples/s (median) |",
        "",
    ]
    if not evaluated:
        lines += ["The data has no test or eval split: nothing was evaluated.", ""]
    elif not test:
        lines += [
            f"The data has no test split; the per-class table is the {test_name} split's.",
            "",
        ]
    if plotted:
        lines += ["![loss and accuracy curves](loss_curve.png)", ""]
    if evaluated.get("per_class"):
        lines += [
            f"## Per class ({test_name} split)",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for name, row in evaluated["per_class"].items():
            lines.append(
                f"| {name} | {_num(row['precision'])} | {_num(row['recall'])} | "
                f"{_num(row['f1'])} | {row['support']} |"
            )
        lines.append("")
    images = [
        (f"confusion matrix ({split})", png)
        for split, png in (("eval", "confusion_matrix.png"), ("test", "confusion_matrix_test.png"))
        if os.path.isfile(os.path.join(workdir, png))
    ]
    if images:
        lines += ["## Confusion matrices", ""]
        lines += [f"![{alt}]({png})" for alt, png in images]
        lines.append("")
    lines += ["## Export", ""]
    if verification:
        mismatches = verification.get("label_mismatches", 0)
        accuracy = verification.get("accuracy")
        lines += [
            f"SavedModel `export/saved_model/` ({verification['size_bytes'] / 1e6:.1f} MB), "
            f"signatures {', '.join(verification.get('signatures', []))}.",
            f"Verification on {verification['examples']} eval rows: labels "
            f"{'identical' if mismatches == 0 else f'DIFFER on {mismatches} rows'}, "
            f"max |Δp| {verification['max_abs_diff']:.2g}"
            + (f", artifact accuracy {accuracy:.4f}" if accuracy is not None else "")
            + ".",
            "",
        ]
    else:
        lines += ["Not exported.", ""]
    lines += _tflite_lines(workdir)
    lines += compress_stage.compression_lines(workdir, config)
    lines += stage_lines(run.results)
    lines += ["", "## Reproduce", "", "```", command_line(command_name())]
    lines += _reproduce_commands(workdir, test_name)
    lines += [
        f"tensorboard --logdir {shlex.quote(os.path.join(workdir, 'tensorboard'))}",
        "```",
        "",
    ]
    lines += environment_lines()
    atomic_write_text(path, "\n".join(lines))
    html_path = write_html_report(path)
    return f"({path}, {html_path})"
