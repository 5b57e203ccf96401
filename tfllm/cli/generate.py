"""tfllm-generate: text from a prompt, with the KV-cache decode loop.

  tfllm-generate --workdir=runs/tiny --prompt="ROMEO:" --max_new_tokens=50 \
      --sampler=top_p --top_p=0.9 --temperature=0.8 --seed=1

Backends: `keras` (the checkpoint), `saved_model` (W/export/saved_model, the
artifact TF Serving would run) or `litert` (W/export/tflite_<quantize>/model.tflite
through its prefill/decode signatures, as on a phone). All three share one
sampling rule, so a seed gives the same text on each (a float export's greedy
text is identical to Keras'; a quantized one may drift).
Prompts longer than the context are truncated from the left.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_string("prompt", "", "Prompt text (may be empty: start a new document).")
flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate (clamped to the context - 1).")
flags.DEFINE_enum(
    "sampler", "greedy", ["greedy", "temperature", "top_k", "top_p"], "Decoding rule."
)
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (> 0) for sampling.")
flags.DEFINE_integer("top_k", 40, "Keep the k most likely tokens (sampler=top_k).")
flags.DEFINE_float("top_p", 0.9, "Nucleus mass in (0, 1] (sampler=top_p).")
flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same text.")
flags.DEFINE_enum(
    "backend",
    "keras",
    ["keras", "saved_model", "litert"],
    "keras: the checkpoint; saved_model: W/export/saved_model; litert: the TFLite export.",
)
flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "dynamic", "float16", "int8"],
    "--backend=litert: which export, W/export/tflite_<quantize>/model.tflite.",
)
flags.DEFINE_integer("num_samples", 1, "Independent samples (seeds seed, seed+1, ...).")


def main(argv) -> None:
    del argv
    from tfllm.inference.sampling import check_sampler_args

    check_sampler_args(
        FLAGS.sampler, FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.max_new_tokens
    )
    if FLAGS.max_new_tokens > 100_000:
        common.fail(f"--max_new_tokens: {FLAGS.max_new_tokens} is absurdly large (max 100000)")
    if FLAGS.num_samples < 1:
        common.fail("--num_samples: must be ≥ 1")
    if FLAGS.backend == "keras":
        texts = _generate_keras()
    elif FLAGS.backend == "litert":
        texts = _generate_litert()
    else:
        texts = _generate_saved_model()
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} (seed {FLAGS.seed + i}) ---")
        sys.stdout.write(FLAGS.prompt + text + "\n")
    sys.stdout.flush()


def _generate_keras() -> list[str]:
    import keras

    from tfllm.inference.generate import Generator
    from tfllm.inference.loading import load_trained

    keras.utils.set_random_seed(FLAGS.seed)  # before the tokenizer exists (DESIGN §2)
    trained = load_trained(FLAGS.workdir)
    if trained.is_classifier:
        common.fail(
            f"--workdir: {FLAGS.workdir} holds a {trained.config.model.name}, which classifies "
            "text rather than generating it (use tfllm-evaluate or the exported SavedModel)"
        )
    return _sample_texts(Generator(trained.model), trained.tokenizer)


def _sample_texts(generator, tokenizer) -> list[str]:
    """--num_samples continuations of --prompt (seeds seed, seed+1, ...) with any backend's
    generator: the Keras and LiteRT backends share this loop and its sampling rule."""
    from tfllm.inference.generate import generate_text

    return [
        generate_text(
            generator,
            tokenizer,
            [FLAGS.prompt],
            FLAGS.max_new_tokens,
            sampler=FLAGS.sampler,
            temperature=FLAGS.temperature,
            top_k=FLAGS.top_k,
            top_p=FLAGS.top_p,
            seed=FLAGS.seed + i,
        )[0]
        for i in range(FLAGS.num_samples)
    ]


def _generate_litert() -> list[str]:
    from tfllm.config import CLASSIFIER_NAMES, load_workdir_config
    from tfllm.data.tokenizer import Tokenizer
    from tfllm.export.litert import tflite_path
    from tfllm.inference.litert_lm import LiteRTGenerator, LiteRTLM

    config = load_workdir_config(FLAGS.workdir)
    if config.model.name in CLASSIFIER_NAMES:
        common.fail(f"--workdir: {FLAGS.workdir} holds a {config.model.name}, not a language model")
    path = tflite_path(FLAGS.workdir, FLAGS.quantize)
    if not os.path.isfile(path):
        common.fail(
            f"--backend=litert: {path} not found "
            f"(run tfllm-export --workdir={FLAGS.workdir} --format=tflite "
            f"--quantize={FLAGS.quantize})"
        )
    # The tokenizer shipped beside the .tflite, so the file and its vocabulary travel together.
    with open(os.path.join(os.path.dirname(path), "tokenizer.model"), "rb") as f:
        tokenizer = Tokenizer(f.read())
    return _sample_texts(LiteRTGenerator(LiteRTLM(path)), tokenizer)


def _generate_saved_model() -> list[str]:
    import tensorflow as tf

    from tfllm.export.saved_model import load_serving

    loaded = load_serving(os.path.join(FLAGS.workdir, "export", "saved_model"))
    fn = getattr(loaded, f"generate_{FLAGS.sampler}")
    texts = []
    for i in range(FLAGS.num_samples):
        out = fn(
            tf.constant([FLAGS.prompt]),
            tf.constant(FLAGS.max_new_tokens),
            tf.constant(FLAGS.temperature, tf.float32),
            tf.constant(FLAGS.top_k),
            tf.constant(FLAGS.top_p, tf.float32),
            tf.constant(FLAGS.seed + i),
        )
        texts.append(out["completions"].numpy()[0].decode("utf-8"))
    return texts


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
