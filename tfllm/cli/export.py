"""tfllm-export: write a verified SavedModel or TFLite/LiteRT file.

  tfllm-export --workdir=runs/tiny --format=saved_model
  tfllm-export --workdir=runs/tiny --format=tflite --quantize=dynamic
  tfllm-export --workdir=runs/smollm2 --format=hf
  tfllm-export --workdir=runs/tiny --format=litertlm --quantize=int4

Every artifact is built in a temp dir, loaded back and compared with the Keras
model; only then is it renamed into place with its `verification.json`.

- SavedModel (`W/export/saved_model/`, raw strings in): an LM's greedy output
  on `config.export.verify_prompts` must be identical; a classifier's labels
  and probabilities on up to `--verify_examples` eval rows must match.
- TFLite (`W/export/tflite_<quantize>/model.tflite`, token ids in, the
  tokenizer beside it): an LM gets `prefill`/`decode` KV-cache signatures and
  is checked on eval windows (logits, perplexity, greedy text); a classifier
  gets a `classify` signature and is checked on eval rows (probabilities,
  accuracy). Float exports must match Keras; quantized ones must stay within
  the mode's perplexity/accuracy budget (override with the tolerance flags).
- LiteRT-LM (`W/export/litertlm_<quantize>/model.litertlm`: the `.tflite`
  under LiteRT-LM's prefill/decode contract, the tokenizer and LlmMetadata,
  for Google's on-device LLM engine): loaded by `litert_lm.Engine` and
  greedy-decoded on the verification prompts (incl. a chunked prefill and a
  two-turn continuation); float text must equal Keras', quantized files
  (dynamic, int8, int4 weights) must keep perplexity within budget.
- Hugging Face (`W/export/hf/`: config.json, model.safetensors, tokenizer files)
  for gpt (as GPT-2), llama and bert models: read back into a fresh model with
  identical outputs, and, where transformers is installed, loaded by it with
  outputs within 1e-4 (docs/pretrained.md).
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
    ["saved_model", "tflite", "hf", "litertlm"],
    "Artifact format; hf: config.json + model.safetensors + tokenizer for transformers; "
    "litertlm: a .litertlm bundle for Google's LiteRT-LM engine.",
)
flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "dynamic", "float16", "int8", "int4"],
    "TFLite post-training quantization: dynamic (int8 weights), float16 (fp16 weights), "
    "int8 (full integer, calibrated on training data). litertlm: none, dynamic, int8 "
    "(int8 weights per channel), int4 (blockwise int4 weights). SavedModel: none only.",
)
flags.DEFINE_integer(
    "max_new_tokens", None, "Tokens serving_default generates per prompt (default: config.export)."
)
flags.DEFINE_integer(
    "verify_examples",
    None,
    "Eval rows (classifiers, default 256) or eval windows (LM TFLite, default 4; "
    "litertlm, default 2) to verify on.",
)
flags.DEFINE_float(
    "max_abs_diff",
    None,
    "TFLite: largest allowed |Δ| vs Keras (logits for LMs, probabilities "
    "for classifiers); default 1e-3 / 1e-4 for float exports, unchecked for quantized ones.",
)
flags.DEFINE_float(
    "max_perplexity_increase",
    None,
    "LM TFLite: allowed relative perplexity increase over "
    "Keras (default: none 0.001, float16 0.01, dynamic 0.05, int8 0.25).",
)
flags.DEFINE_float(
    "max_accuracy_drop",
    None,
    "Classifier TFLite: allowed accuracy drop vs Keras in points "
    "(default per quantize mode, see docs/edge.md).",
)


def main(argv) -> None:
    del argv
    from tfllm.export.workdir import export_workdir
    from tfllm.inference.loading import load_trained

    if FLAGS.max_new_tokens is not None and not 1 <= FLAGS.max_new_tokens <= 100_000:
        common.fail(f"--max_new_tokens: must be in [1, 100000], got {FLAGS.max_new_tokens}")
    if FLAGS.verify_examples is not None and not 1 <= FLAGS.verify_examples <= 100_000:
        common.fail(f"--verify_examples: must be in [1, 100000], got {FLAGS.verify_examples}")
    if FLAGS.format in ("saved_model", "hf") and FLAGS.quantize != "none":
        common.fail(
            f"--quantize: {FLAGS.format} export is float only; use --format=tflite to quantize"
        )
    if FLAGS.format == "litertlm" and FLAGS.quantize == "float16":
        common.fail("--quantize=float16: --format=litertlm takes none, dynamic, int8, int4")
    if FLAGS.format != "litertlm" and FLAGS.quantize == "int4":
        common.fail("--quantize=int4: only with --format=litertlm (LiteRT's blockwise int4)")
    for name in ("max_abs_diff", "max_perplexity_increase", "max_accuracy_drop"):
        value = getattr(FLAGS, name)
        if value is not None and not value >= 0:
            common.fail(f"--{name}: must be ≥ 0, got {value}")
    trained = load_trained(FLAGS.workdir)
    with common.workdir_lock(FLAGS.workdir, trained.config):
        export = export_workdir(
            trained,
            FLAGS.format,
            FLAGS.quantize,
            max_new_tokens=FLAGS.max_new_tokens,
            verify_examples=FLAGS.verify_examples,
            max_abs_diff=FLAGS.max_abs_diff,
            max_perplexity_increase=FLAGS.max_perplexity_increase,
            max_accuracy_drop=FLAGS.max_accuracy_drop,
        )
    common.print_summary("tfllm-export", _summary(export))


def _summary(export) -> list[tuple[str, object]]:
    """The summary rows of each kind of export."""
    trained, record, target = export.trained, export.record, export.directory
    if export.format == "hf":
        check = record["transformers"]
        return [
            ("hf", target),
            ("checkpoint", trained.checkpoint),
            ("family", record["family"]),
            ("verified", record["round_trip"]),
            (
                "transformers",
                check
                if isinstance(check, str)
                else f"{check['transformers']}: max |Δ| {check['max_abs_diff']:.2g}",
            ),
        ]
    if export.format == "litertlm":
        greedy = record["greedy"]
        return [
            ("litertlm", os.path.join(target, record["file"])),
            ("checkpoint", trained.checkpoint),
            ("quantize", record["quantize"]),
            ("prefill_buckets", ", ".join(str(b) for b in record["prefill_buckets"])),
            ("verified", f"{len(greedy)} prompts/turns in LiteRT-LM, "
                         f"{record['windows']} eval windows ({record['tokens']} tokens)"),
            ("greedy_identical", record["greedy_identical"]),
            ("max_abs_diff", record["max_abs_diff"]),
            ("perplexity", f"{record['perplexity']:.4g} (Keras {record['keras_perplexity']:.4g})"),
            ("decode_tokens_per_second", record["engine_decode_tokens_per_second_median"]),
            ("size_bytes", record["size_bytes"]),
            ("verification", export.verification),
        ]  # fmt: skip
    if export.format == "tflite":
        tflite = os.path.join(target, record["file"])
        rows = [("tflite", tflite), ("checkpoint", trained.checkpoint)]
        if trained.is_classifier:
            rows += [
                ("verified", f"{record['examples']} eval rows"),
                ("max_abs_diff", record["max_abs_diff"]),
                ("accuracy", record.get("accuracy")),
            ]
        else:
            keras_ppl = record["keras_perplexity"]
            rows += [
                ("signatures", ", ".join(sorted(record["signatures"]))),
                ("verified", f"{record['windows']} eval windows ({record['tokens']} tokens)"),
                ("max_abs_diff", record["max_abs_diff"]),
                ("perplexity", f"{record['perplexity']:.4g} (Keras {keras_ppl:.4g})"),
                ("greedy_identical", record["greedy"]["identical"]),
                ("decode_ms", record["latency"]["decode"]["median_ms"]),
            ]
    elif trained.is_classifier:
        rows = [
            ("saved_model", target),
            ("checkpoint", trained.checkpoint),
            (
                "verified",
                f"{record['examples']} rows, labels identical, max |Δp| "
                f"{record['max_abs_diff']:.2g}",
            ),
            ("accuracy", record.get("accuracy")),
            ("classes", ", ".join(trained.labels.names)),
        ]
    else:
        prompts = len(trained.config.export.verify_prompts)
        rows = [
            ("saved_model", target),
            ("checkpoint", trained.checkpoint),
            ("verified", f"{prompts} prompts, greedy output identical to Keras"),
            ("size_bytes", record["size_bytes"]),
            ("signatures", ", ".join(record["signatures"])),
        ]
        return [*rows, ("verification", export.verification)]
    return [*rows, ("size_bytes", record["size_bytes"]), ("verification", export.verification)]


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
