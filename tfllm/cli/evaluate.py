"""tfllm-evaluate: metrics of a trained model on a split or a file.

  tfllm-evaluate --workdir=runs/tiny [--split=eval|train] [--data=FILE --format=text]
  tfllm-evaluate --workdir=runs/cnn [--split=eval|train|test] [--data=FILE --format=tsv]
  tfllm-evaluate --workdir=W --backend=litert [--quantize=none|dynamic|float16|int8]
  tfllm-evaluate --workdir=W --strategy=mirrored --logical_cpus=2   (or multi_worker under
      tfllm-launch, or --tensor_parallel=2): every batch sharded over the replicas,
      the same numbers as one device (tfllm.inference.distributed)

Language models: loss and perplexity. Updates `W/metrics.json`: `eval_loss`/
`perplexity` for the eval split, `train_split_loss`/`train_split_perplexity`
for train, `data_loss`/`data_perplexity` for --data.

Classifiers: accuracy, macro/micro precision/recall/F1, per-class scores,
confusion matrix (also as `W/confusion_matrix[_<split>].png`), ROC-AUC and log
loss. The eval split's numbers go to the top level of `metrics.json` (the keys
`tfllm-train` writes); other splits under `train_split`, `test_split`, `data`.

`--backend=litert` evaluates the exported `.tflite` in
`W/export/tflite_<quantize>/` (written by `tfllm-export --format=tflite`)
instead of the Keras checkpoint: the same metrics, stored apart so the Keras
numbers stay: an LM's under `litert_<quantize>_<prefix>loss` /
`..._perplexity` / `..._tokens`, a classifier's under `litert_<quantize>_<split>`
(with its confusion matrix as `confusion_matrix_litert_<quantize>_<split>.png`).
"""

from __future__ import annotations

import os

from absl import flags

from tfllm.cli import common
from tfllm.config import DATA_FORMATS

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_enum(
    "split", "eval", ["eval", "train", "test"], "Which split of the run's data (test: classifiers)."
)
flags.DEFINE_string("data", "", "Evaluate on this file instead (glob or comma list allowed).")
flags.DEFINE_enum("format", None, list(DATA_FORMATS), "Format of --data (default: the run's).")
flags.DEFINE_string("text_field", None, "Text column/field of --data (default: the run's).")
flags.DEFINE_string("label_field", None, "Label column/field of --data (default: the run's).")
flags.DEFINE_integer("batch_size", 16, "Windows (LM) or examples (classifier) per batch.")
flags.DEFINE_integer("max_batches", 0, "Stop after this many batches (0 = all).")
flags.DEFINE_integer(
    "step",
    None,
    "Evaluate the kept checkpoint of this step instead of the newest (Keras backend); "
    "recorded under metrics.json's by_step.",
)
flags.DEFINE_enum(
    "backend",
    "keras",
    ["keras", "litert"],
    "keras: the checkpoint; litert: the .tflite tfllm-export --format=tflite wrote.",
)
# The modes of tfllm.export.litert.QUANTIZE_MODES (not imported here: it pulls in TensorFlow).
flags.DEFINE_enum(
    "quantize",
    None,
    ["none", "dynamic", "float16", "int8"],
    "--backend=litert: which export, W/export/tflite_<quantize>/ (default none).",
)
common.define_inference_runtime_flags()


def main(argv) -> None:
    del argv
    if FLAGS.batch_size < 1:
        common.fail(f"--batch_size: must be ≥ 1, got {FLAGS.batch_size}")
    if FLAGS.max_batches < 0:
        common.fail(f"--max_batches: must be ≥ 0, got {FLAGS.max_batches}")
    if FLAGS.step is not None and FLAGS.step < 0:
        common.fail(f"--step: must be ≥ 0, got {FLAGS.step}")
    if FLAGS.step is not None and FLAGS.backend == "litert":
        common.fail("--step: only with --backend=keras (an export is of one checkpoint)")
    if FLAGS.quantize is not None and FLAGS.backend != "litert":
        common.fail("--quantize: only with --backend=litert (it picks which TFLite export to run)")
    from tfllm.evaluation.classification import format_metrics_table
    from tfllm.evaluation.workdir import evaluate_workdir, record_evaluation
    from tfllm.inference.distributed import Progress
    from tfllm.inference.loading import load_trained

    strategy = _strategy()
    trained = load_trained(FLAGS.workdir, strategy, step=FLAGS.step)
    if strategy is not None:
        trained.config.runtime = _RUNTIME[0]  # multi_worker: per-task lock names
    if FLAGS.backend == "litert":
        _check_tflite_export(trained)
    chief = _is_chief(strategy)
    evaluation = evaluate_workdir(
        trained,
        split=FLAGS.split,
        data=FLAGS.data,
        data_format=FLAGS.format,
        text_field=FLAGS.text_field,
        label_field=FLAGS.label_field,
        batch_size=FLAGS.batch_size,
        max_batches=FLAGS.max_batches,
        backend=FLAGS.backend,
        quantize=_quantize(),
        strategy=strategy,
        progress=lambda total: Progress(total, enabled=chief, unit="windows"),
        write_png=chief and FLAGS.step is None,  # the PNG is the final checkpoint's
    )
    if not chief:
        return  # every worker computed the same numbers; the chief records them
    with common.workdir_lock(FLAGS.workdir, trained.config):  # training may be updating it
        path = record_evaluation(evaluation, at_step=FLAGS.step)
    metrics = evaluation.metrics
    rows = [
        ("checkpoint", trained.checkpoint),
        ("backend", _backend_label()),
        *_strategy_row(strategy),
        ("split", evaluation.split),
    ]
    if evaluation.is_classifier:
        print(format_metrics_table(metrics), flush=True)
        rows += [
            ("examples", evaluation.count),
            ("accuracy", metrics["accuracy"]),
            ("macro_f1", metrics["macro_f1"]),
        ]
        if evaluation.png_path:
            rows.append(("confusion_matrix", evaluation.png_path))
    else:
        rows += [
            ("tokens", metrics["tokens"]),
            ("loss", metrics["loss"]),
            ("perplexity", metrics["perplexity"]),
        ]
    common.print_summary("tfllm-evaluate", [*rows, ("metrics", path)])


_RUNTIME: list = []  # the runtime section _strategy() chose


def _strategy():
    """The inference strategy the flags ask for, or None for the plain one-device path.

    Logical CPUs are configured here, before the model (and TensorFlow's devices)
    exist. `--backend=litert` runs the .tflite in the LiteRT interpreter: no strategy.
    """
    from tfllm.config import load_workdir_config, validate
    from tfllm.errors import WorkdirError

    asked = FLAGS.strategy != "default" or FLAGS.logical_cpus or (FLAGS.tensor_parallel or 1) > 1
    if not asked:
        return None
    if FLAGS.backend == "litert":
        common.fail("--strategy/--logical_cpus/--tensor_parallel: not with --backend=litert")
    if FLAGS.logical_cpus is not None and FLAGS.logical_cpus < 0:
        common.fail(f"--logical_cpus: must be ≥ 0, got {FLAGS.logical_cpus}")
    if FLAGS.tensor_parallel is not None and FLAGS.tensor_parallel < 1:
        common.fail(f"--tensor_parallel: must be ≥ 1, got {FLAGS.tensor_parallel}")
    if not os.path.isdir(FLAGS.workdir):
        raise WorkdirError(f"--workdir: no such directory: {FLAGS.workdir}")
    config = load_workdir_config(FLAGS.workdir)
    runtime, strategy = common.inference_strategy(config)
    config.runtime = runtime
    validate(config)  # tensor_parallel must divide the heads and the devices
    _RUNTIME[:] = [runtime]
    return strategy


def _is_chief(strategy) -> bool:
    from tfllm.distribute.strategy import is_chief

    return strategy is None or is_chief(strategy)


def _strategy_row(strategy) -> list[tuple[str, object]]:
    if strategy is None:
        return []
    from tfllm.distribute.strategy import describe

    return [("strategy", describe(strategy))]


def _quantize() -> str:
    return FLAGS.quantize or "none"


def _backend_label() -> str:
    return f"litert ({_quantize()})" if FLAGS.backend == "litert" else "keras"


def _check_tflite_export(trained) -> None:
    """Fails with one line unless `W/export/tflite_<quantize>/` exists; warns if it is stale.

    The export records the checkpoint it was made from; a newer checkpoint
    means the numbers would describe an older model.
    """
    from absl import logging

    from tfllm.export.litert import tflite_dir, tflite_path
    from tfllm.utils.io import read_json

    quantize = _quantize()
    if not os.path.isfile(tflite_path(FLAGS.workdir, quantize)):
        common.fail(
            f"--backend=litert: no TFLite export in {tflite_dir(FLAGS.workdir, quantize)} "
            f"(run tfllm-export --workdir={FLAGS.workdir} --format=tflite --quantize={quantize})"
        )
    try:
        record = read_json(os.path.join(tflite_dir(FLAGS.workdir, quantize), "verification.json"))
    except (OSError, ValueError):  # the record is informational here; the .tflite is what runs
        record = {}
    exported = record.get("checkpoint") if isinstance(record, dict) else None
    if exported and os.path.basename(exported) != os.path.basename(trained.checkpoint):
        logging.warning(
            "%s was exported from %s but the latest checkpoint is %s; re-export to evaluate it",
            tflite_path(FLAGS.workdir, quantize),
            os.path.basename(exported),
            os.path.basename(trained.checkpoint),
        )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
