"""tfllm-generate: text from a prompt, with the KV-cache decode loop.

  tfllm-generate --workdir=runs/tiny --prompt="ROMEO:" --max_new_tokens=50 \
      --sampler=top_p --top_p=0.9 --temperature=0.8 --seed=1
  tfllm-generate --workdir=runs/tiny --input_file=prompts.txt --output_file=out.jsonl \
      [--batch_size=8] [--strategy=mirrored --logical_cpus=2]

With --input_file, every prompt of the file (one per line, or .jsonl objects
with a 'prompt' field) is generated in batches, sharded over the strategy's
replicas (mirrored, multi_worker under tfllm-launch), and written as one JSON
line per prompt in input order (tfllm.inference.prompts); prompt i samples
with seed --seed + i, so each line equals `--prompt=<prompt i> --seed=<seed + i>`.

Backends: `keras` (the checkpoint), `saved_model` (W/export/saved_model, the
artifact TF Serving would run), `litert` (W/export/tflite_<quantize>/model.tflite
through its prefill/decode signatures, as on a phone) or `litertlm`
(W/export/litertlm_<quantize>/model.litertlm in Google's LiteRT-LM engine,
streamed to stdout token by token as the engine produces them; greedy text
equals Keras' for a float export, its random samplers are the engine's own). All three share one
sampling rule, so a seed gives the same text on each (a float export's greedy
text is identical to Keras'; a quantized one may drift).
Prompts longer than the context are truncated from the left.

`--chat` (imported instruct models, e.g. SmolLM2-Instruct) puts each prompt
in the model's own chat template as a user turn (with `--system`, after a
system message) and prints only the answer, which ends at the model's
end-of-turn token.
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
    ["keras", "saved_model", "litert", "litertlm"],
    "keras: the checkpoint; saved_model: W/export/saved_model; litert: the TFLite export; "
    "litertlm: the .litertlm export in LiteRT-LM (streams).",
)
flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "dynamic", "float16", "int8", "int4"],
    "--backend=litert|litertlm: which export, W/export/tflite_<quantize>/model.tflite "
    "or W/export/litertlm_<quantize>/model.litertlm.",
)
flags.DEFINE_integer("num_samples", 1, "Independent samples (seeds seed, seed+1, ...).")
flags.DEFINE_string(
    "input_file",
    None,
    "Prompts, one per line (.jsonl: objects with a 'prompt' field); needs --output_file.",
)
flags.DEFINE_string(
    "output_file", None, "--input_file: write one JSON line per prompt here, in input order."
)
flags.DEFINE_integer("batch_size", 8, "--input_file: prompts decoded together (global batch).")
flags.DEFINE_bool(
    "chat",
    False,
    "Wrap each prompt as a user turn in the model's chat template (imported instruct models).",
)
flags.DEFINE_string("system", None, "--chat: a system message before the user turn.")
common.define_inference_runtime_flags()


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
    if FLAGS.system is not None and not FLAGS.chat:
        common.fail("--system: only with --chat")
    if FLAGS.input_file is not None or FLAGS.output_file is not None:
        _generate_file()
        return
    if FLAGS.strategy != "default" or FLAGS.logical_cpus or (FLAGS.tensor_parallel or 1) > 1:
        common.fail("--strategy/--logical_cpus/--tensor_parallel: only with --input_file")
    prompt = FLAGS.prompt
    if FLAGS.chat:
        from tfllm.inference.chat import chat_prompt

        prompt = chat_prompt(FLAGS.workdir, FLAGS.prompt, FLAGS.system)
    if FLAGS.backend == "litertlm":
        _stream_litertlm(prompt)
        return
    if FLAGS.quantize == "int4":
        common.fail("--quantize=int4: only with --backend=litertlm")
    if FLAGS.backend == "keras":
        _stream_keras(prompt)
        return
    from tfllm.inference.workdir import generate

    texts = generate(
        FLAGS.workdir,
        prompt,
        _sampling(),
        backend=FLAGS.backend,
        quantize=FLAGS.quantize,
        num_samples=FLAGS.num_samples,
    )
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} (seed {FLAGS.seed + i}) ---")
        sys.stdout.write((text if FLAGS.chat else FLAGS.prompt + text) + "\n")
    sys.stdout.flush()


def _stream_keras(prompt: str) -> None:
    """Prints each chunk of tokens as the checkpoint produces it (the same text as
    the other backends print at once)."""
    from tfllm.inference.workdir import stream

    current = None
    for sample, piece in stream(FLAGS.workdir, prompt, _sampling(), num_samples=FLAGS.num_samples):
        if sample != current:
            if current is not None:
                sys.stdout.write("\n")
            if FLAGS.num_samples > 1:
                print(f"--- sample {sample + 1} (seed {FLAGS.seed + sample}) ---")
            if not FLAGS.chat:
                sys.stdout.write(FLAGS.prompt)
            current = sample
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def _stream_litertlm(prompt: str) -> None:
    """Prints each token's text as LiteRT-LM produces it (one engine, a session per sample)."""
    from tfllm.inference.litertlm_runner import EngineSampling, LiteRTLMEngine, litertlm_path

    if FLAGS.quantize == "float16":
        common.fail("--quantize=float16: the litertlm exports are none, dynamic, int8, int4")
    if not prompt:
        common.fail(
            "--prompt: --backend=litertlm needs a non-empty prompt (the engine starts "
            "from the prompt's tokens; tfllm's own loop starts an empty one at eos)"
        )
    path = litertlm_path(FLAGS.workdir, FLAGS.quantize)
    if not os.path.isfile(path):
        common.fail(
            f"--backend=litertlm: {path} not found (run tfllm-export --workdir={FLAGS.workdir} "
            f"--format=litertlm --quantize={FLAGS.quantize})"
        )
    with LiteRTLMEngine(path) as engine:
        for i in range(FLAGS.num_samples):
            if FLAGS.num_samples > 1:
                print(f"--- sample {i + 1} (seed {FLAGS.seed + i}) ---")
            sampling = EngineSampling(
                FLAGS.sampler, FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.seed + i
            )
            session = engine.session(FLAGS.max_new_tokens, sampling)
            try:
                if not FLAGS.chat:
                    sys.stdout.write(FLAGS.prompt)
                for piece in engine.stream(session, prompt):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            finally:
                session.close()
            sys.stdout.write("\n")
            sys.stdout.flush()


def _check_file_flags() -> None:
    """The flag combinations batch generation accepts, each a one-line error."""
    if FLAGS.input_file is None:
        common.fail("--output_file: only with --input_file (the prompts to generate from)")
    if FLAGS.output_file is None:
        common.fail("--input_file: needs --output_file (where the JSON lines go)")
    if FLAGS["prompt"].present:
        common.fail("--input_file: give the prompts either in the file or as --prompt, not both")
    if FLAGS.num_samples != 1:
        common.fail("--num_samples: not with --input_file (one completion per prompt line)")
    if FLAGS.backend != "keras":
        common.fail(f"--backend={FLAGS.backend}: --input_file runs the checkpoint (keras) only")
    if FLAGS.batch_size < 1:
        common.fail(f"--batch_size: must be ≥ 1, got {FLAGS.batch_size}")
    if FLAGS.logical_cpus is not None and FLAGS.logical_cpus < 0:
        common.fail(f"--logical_cpus: must be ≥ 0, got {FLAGS.logical_cpus}")
    if FLAGS.tensor_parallel is not None and FLAGS.tensor_parallel < 1:
        common.fail(f"--tensor_parallel: must be ≥ 1, got {FLAGS.tensor_parallel}")


def _sampling():
    from tfllm.inference.workdir import Sampling

    return Sampling(
        max_new_tokens=FLAGS.max_new_tokens,
        sampler=FLAGS.sampler,
        temperature=FLAGS.temperature,
        top_k=FLAGS.top_k,
        top_p=FLAGS.top_p,
        seed=FLAGS.seed,
    )


def _generate_file() -> None:
    """--input_file: every prompt, batched and sharded over the strategy's replicas;
    the chief writes --output_file (JSON lines, input order, atomically)."""
    from tfllm.config import LM_NAMES, load_workdir_config, validate
    from tfllm.errors import WorkdirError
    from tfllm.inference.prompts import check_output_path, read_prompts, write_results

    _check_file_flags()
    prompts = read_prompts(FLAGS.input_file)
    if FLAGS.chat:
        from tfllm.inference.chat import chat_prompt

        for p in prompts:  # the output file records the templated prompt the model saw
            p.text = chat_prompt(FLAGS.workdir, p.text, FLAGS.system)
    check_output_path(FLAGS.output_file)
    if not os.path.isdir(FLAGS.workdir):
        raise WorkdirError(f"--workdir: no such directory: {FLAGS.workdir}")
    config = load_workdir_config(FLAGS.workdir)
    if config.model.name not in LM_NAMES:
        common.fail(f"--workdir: {FLAGS.workdir} holds a {config.model.name}, not a language model")
    runtime, strategy = common.inference_strategy(config)
    config.runtime = runtime
    validate(config)  # tensor_parallel must divide the heads, the devices, ...

    from tfllm.distribute.strategy import describe, is_chief
    from tfllm.inference.distributed import Progress
    from tfllm.inference.workdir import generate_batch

    chief = is_chief(strategy)
    progress = Progress(len(prompts), enabled=chief)
    result = generate_batch(
        FLAGS.workdir,
        prompts,
        _sampling(),
        strategy=strategy,
        batch_size=FLAGS.batch_size,
        on_batch=progress.update,
    )
    if not chief:  # every worker holds all rows after the all-gather; the chief writes them
        return
    write_results(FLAGS.output_file, result.rows)
    rows, seconds = result.rows, result.seconds
    common.print_summary(
        "tfllm-generate",
        [
            ("checkpoint", result.trained.checkpoint),
            ("strategy", describe(strategy)),
            ("prompts", len(rows)),
            ("new tokens", result.tokens),
            ("seconds", seconds),
            ("prompts_per_second", len(rows) / seconds),
            ("tokens_per_second", result.tokens / seconds),
            ("output", FLAGS.output_file),
        ],
    )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
