"""tfllm-export: write a verified SavedModel (raw strings in, text out).

  tfllm-export --workdir=runs/tiny --format=saved_model

The artifact is built in a temp dir, reloaded, and its greedy output compared
with the Keras model's on `config.export.verify_prompts`; only a match is
renamed into `W/export/saved_model/` (with `verification.json`).
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


def main(argv) -> None:
    del argv
    from tfllm.export.saved_model import export_saved_model
    from tfllm.inference.generate import Generator, generate_text
    from tfllm.inference.loading import load_trained

    if FLAGS.max_new_tokens is not None and not 1 <= FLAGS.max_new_tokens <= 100_000:
        common.fail(f"--max_new_tokens: must be in [1, 100000], got {FLAGS.max_new_tokens}")
    trained = load_trained(FLAGS.workdir)
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


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
