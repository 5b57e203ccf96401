"""tfllm-import: turn a published checkpoint into a tfllm workdir.

  tfllm-import --source=SmolLM2-135M-Instruct.Q4_1.gguf --workdir=runs/smollm2
  tfllm-import --source=path/to/all-MiniLM-L6-v2 --workdir=runs/minilm

--source is a GGUF file (llama architecture; F32/F16/BF16/Q8_0/Q4_x/Q5_x/K-quants,
dequantized to float32) or a Hugging Face model directory (`config.json`,
`*.safetensors`, and `tokenizer.json` or BERT's `vocab.txt`). Families: llama
(Llama 2/3, SmolLM, TinyLlama), bert (encoders). The workdir is an ordinary
one: tfllm-generate, tfllm-evaluate, tfllm-export and tfllm-train
(`--config.train.init_from=W`) read it like any run's (docs/pretrained.md).
An unsupported architecture, tensor type, missing tensor or shape mismatch
is one line naming it, and no workdir is left behind.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "source", None, "A .gguf file or a Hugging Face model directory.", required=True
)
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)


def main(argv) -> None:
    del argv
    # TensorFlow loads after the flags parse (a bad flag answers at once).
    from tfllm.pretrained.importer import import_checkpoint
    from tfllm.utils.lock import WorkdirLock

    # The lock sits beside the workdir, not in it: the import renames a complete
    # temp directory into place, which must not carry (or replace) a lock file.
    target = os.path.abspath(FLAGS.workdir)
    lock = WorkdirLock(os.path.dirname(target), "tfllm-import", f".{os.path.basename(target)}.lock")
    with lock:
        report = import_checkpoint(FLAGS.source, FLAGS.workdir)
    common.print_summary(
        f"Imported {FLAGS.source}",
        [
            ("family", report.family),
            ("format", report.format),
            ("parameters", f"{report.num_params:,}"),
            ("vocabulary", f"{report.vocab_size:,}"),
            ("time", f"{report.seconds:.1f} s"),
            ("peak RSS", f"{report.peak_rss_mb:,.0f} MB"),
            ("workdir", report.workdir),
        ],
    )
    if report.adds_bos:
        print(
            f"{common.command_name()}: warning: this model's tokenizer starts every text with "
            "its BOS token and tfllm does not add it yet: prompts and evaluated text start "
            "without it, so outputs can differ from transformers' (docs/pretrained.md#not-yet)",
            file=sys.stderr,
        )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
