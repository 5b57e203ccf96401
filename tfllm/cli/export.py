"""tfllm-export: write a verified SavedModel (raw strings in; text or labels out).

  tfllm-export --workdir=runs/tiny --format=saved_model

The artifact is built in a temp dir, reloaded, and compared with the Keras
model: an LM's greedy output on `config.export.verify_prompts` must be
identical; a classifier's labels and probabilities on up to
`--verify_examples` eval rows must match. Only then is it renamed into
`W/export/saved_model/` (with `verification.json`).
"""

from __future__ import annotations

import os

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_enum(
    "format",
    "saved_model",
    ["saved_model"],
    "Artifact format (TFLite export is a separate feature, not in this release).",
)
flags.DEFINE_enum("quantize", "none", ["none"], "Quantization (none for SavedModel).")
flags.DEFINE_integer(
    "max_new_tokens", None, "Tokens serving_default generates per prompt (default: config.export)."
)


flags.DEFINE_integer("verify_examples", 256, "Classifiers: eval rows the artifact is verified on.")


def main(argv) -> None:
    del argv
    from tfllm.export.saved_model import export_saved_model
    from tfllm.inference.generate import Generator, generate_text
    from tfllm.inference.loading import load_trained

    if FLAGS.max_new_tokens is not None and not 1 <= FLAGS.max_new_tokens <= 100_000:
        common.fail(f"--max_new_tokens: must be in [1, 100000], got {FLAGS.max_new_tokens}")
    if not 1 <= FLAGS.verify_examples <= 100_000:
        common.fail(f"--verify_examples: must be in [1, 100000], got {FLAGS.verify_examples}")
    trained = load_trained(FLAGS.workdir)
    if trained.is_classifier:
        _export_classifier(trained)
        return
    max_new = FLAGS.max_new_tokens or int(trained.config.export.max_new_tokens)
    prompts = list(trained.config.export.verify_prompts)
    target = os.path.join(FLAGS.workdir, "export", "saved_model")
    with common.workdir_lock(FLAGS.workdir, trained.config):
        reference = generate_text(Generator(trained.model), trained.tokenizer, prompts, max_new)
        record = export_saved_model(
            trained.model,
            trained.tokenizer,
            target,
            max_new_tokens=max_new,
            verify_prompts=prompts,
            reference=reference,
        )
    common.print_summary(
        "tfllm-export",
        [
            ("saved_model", target),
            ("checkpoint", trained.checkpoint),
            ("verified", f"{len(prompts)} prompts, greedy output identical to Keras"),
            ("size_bytes", record["size_bytes"]),
            ("signatures", ", ".join(record["signatures"])),
            ("verification", os.path.join(target, "verification.json")),
        ],
    )


def _export_classifier(trained) -> None:
    from tfllm.export.classifier_saved_model import export_trained_classifier

    target = os.path.join(FLAGS.workdir, "export", "saved_model")
    with common.workdir_lock(FLAGS.workdir, trained.config):
        record = export_trained_classifier(trained, target, FLAGS.verify_examples)
    common.print_summary(
        "tfllm-export",
        [
            ("saved_model", target),
            ("checkpoint", trained.checkpoint),
            (
                "verified",
                f"{record['examples']} rows, labels identical, max |Δp| "
                f"{record['max_abs_diff']:.2g}",
            ),
            ("accuracy", record.get("accuracy")),
            ("classes", ", ".join(trained.labels.names)),
            ("size_bytes", record["size_bytes"]),
            ("verification", os.path.join(target, "verification.json")),
        ],
    )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
