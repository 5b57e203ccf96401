r"""tfllm-compress: prune, quantization-aware-train or distil a trained workdir.

  tfllm-compress --workdir=runs/sst2 --method=prune --sparsity=0.8 --output=runs/sst2_p80
  tfllm-compress --workdir=runs/sst2 --method=prune --m_by_n=2:4 --output=runs/sst2_24
  tfllm-compress --workdir=runs/sst2 --method=qat --output=runs/sst2_qat
  tfllm-compress --workdir=runs/tiny --method=quantize --mode=int4 --output=runs/tiny_int4
  tfllm-compress --workdir=runs/sst2 --method=distill \
      --student_config=configs/transformer_sst2_student.py --output=runs/sst2_student

OUT is an ordinary workdir (evaluate / export / generate work on it) with a
`compression.json` record; re-running the same command resumes it. The source
workdir is only read. See docs/compression.md.
"""

from __future__ import annotations

import os

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained workdir to compress (read only).", required=True)
flags.DEFINE_string("output", None, "New workdir for the compressed model.", required=True)
flags.DEFINE_string("method", None, "prune | qat | distill | quantize.", required=True)
flags.DEFINE_integer(
    "steps",
    0,
    "Fine-tuning steps; 0 = prune: half the source's steps, "
    "qat: a quarter, distill: the student config's num_steps.",
)
flags.DEFINE_float(
    "learning_rate",
    0.0,
    "Peak learning rate; 0 = prune: 0.5×, qat: 0.1× the source's, distill: the student config's.",
)
flags.DEFINE_float("sparsity", 0.8, "prune: final fraction of zero weights per kernel, in [0, 1).")
flags.DEFINE_string("schedule", "polynomial", "prune: polynomial (ramp from 0) | constant.")
flags.DEFINE_string(
    "m_by_n", "", "prune: structured sparsity M:N, e.g. 2:4 (overrides --sparsity)."
)
flags.DEFINE_bool(
    "prune_embeddings",
    True,
    "prune: include Embedding tables (the GPT's tied LM head); --noprune_embeddings keeps "
    "them dense.",
)
flags.DEFINE_integer("prune_frequency", 0, "prune: update masks every N steps; 0 = auto.")
flags.DEFINE_string("student_config", "", "distill: config file of the student model.")
flags.DEFINE_float("temperature", 2.0, "distill: softmax temperature T.")
flags.DEFINE_float("alpha", 0.5, "distill: weight of the hard-label loss (1 - alpha: soft).")
flags.DEFINE_enum(
    "student_embeddings",
    "random",
    ["random", "teacher"],
    "distill: teacher = start the student's token table as a copy of the teacher's (same "
    "tokenizer; the student's embedding width must be the teacher's hidden width).",
)
flags.DEFINE_float(
    "augment",
    0.0,
    "distill (classifiers): fraction of each training batch replaced by augmented copies "
    "(pieces masked, rows cut to n-grams; soft labels only). 0 = off.",
)
flags.DEFINE_float("augment_mask", 0.1, "distill: per-piece mask rate of augmented rows.")
flags.DEFINE_float("augment_ngram", 0.25, "distill: share of augmented rows cut to 1..5-grams.")
flags.DEFINE_string("mode", "int8", "quantize: Keras 3 weight-only int8 | int4 (no training).")
common.define_debug_flag()
flags.adopt_module_key_flags(common)


def main(argv) -> None:
    del argv
    from tfllm.compress.run import CompressOptions, check_output, compress_config, compress_workdir

    options = CompressOptions(
        method=FLAGS.method,
        steps=FLAGS.steps,
        learning_rate=FLAGS.learning_rate,
        sparsity=FLAGS.sparsity,
        schedule=FLAGS.schedule,
        m_by_n=FLAGS.m_by_n,
        prune_frequency=FLAGS.prune_frequency,
        prune_embeddings=FLAGS.prune_embeddings,
        student_config=FLAGS.student_config,
        temperature=FLAGS.temperature,
        alpha=FLAGS.alpha,
        student_embeddings=FLAGS.student_embeddings,
        augment=FLAGS.augment,
        augment_mask=FLAGS.augment_mask,
        augment_ngram=FLAGS.augment_ngram,
        mode=FLAGS.mode,
    )
    config = compress_config(FLAGS.workdir, options)  # every flag checked before any work
    check_output(FLAGS.workdir, FLAGS.output, config)
    common.setup_runtime(config)
    os.makedirs(FLAGS.output, exist_ok=True)
    with common.workdir_lock(FLAGS.output, config):
        record = compress_workdir(FLAGS.workdir, FLAGS.output, options)
    rows: list[tuple[str, object]] = [
        ("output", FLAGS.output),
        ("method", record["method"]),
        ("steps", record["steps"]),
    ]
    for key in ("accuracy", "macro_f1", "perplexity"):
        if key in record["metrics"]:
            before = record["source_metrics"].get(key)
            after = record["metrics"][key]
            rows.append((key, f"{before:.4f} → {after:.4f}" if before is not None else after))
    if record["method"] == "prune":
        rows.append(("sparsity", f"{record['sparsity']:.3f} (zeros in the saved kernels)"))
    if "weight_bytes" in record:
        ratio = record["weight_bytes"] / record["source_weight_bytes"]
        rows.append(("weight_bytes", f"{record['weight_bytes']:,} ({ratio:.2f}× the source's)"))
    if "teacher_params" in record:
        ratio = record["teacher_params"] / record["num_params"]
        rows.append(
            ("parameters", f"{record['num_params']:,} ({ratio:.1f}× fewer than the teacher)")
        )
    else:
        rows.append(("parameters", f"{record['num_params']:,}"))
    if record["method"] == "quantize":  # Keras-quantized kernels do not convert to TFLite
        follow = (
            f"tfllm-evaluate --workdir={FLAGS.output} (or tfllm-generate / --format=saved_model)"
        )
    else:
        follow = f"tfllm-export --workdir={FLAGS.output} --format=tflite --quantize=int8"
    rows += [("record", os.path.join(FLAGS.output, "compression.json")), ("next", follow)]
    common.print_summary("tfllm-compress", rows)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
