"""tfllm-benchmark: training tokens/s and MFU, decode tokens/s, against keras-hub.

  tfllm-benchmark --config=configs/bench_gpt_small_cpu.py --mode=all --peer=keras_hub
  tfllm-benchmark --mode=edge --workdir=runs/quickstart   # keras vs SavedModel vs LiteRT

Random token ids at the config's model dimensions: no data, tokenizer or
downloaded weights. Prints one JSON line and writes it to `--output`.
See docs/benchmarks.md for what each number means.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from tfllm.cli import common
from tfllm.config import PRECISIONS

FLAGS = flags.FLAGS
common.define_config_flag(
    "Benchmark config (model dims, batch): configs/bench_*.py, or a workdir's config.json."
)
common.define_debug_flag()
flags.adopt_module_key_flags(common)
flags.DEFINE_enum(
    "mode",
    "all",
    ["train", "decode", "all", "edge"],
    "What to measure; edge: batch-1 generation of a trained --workdir's LM through Keras, "
    "its SavedModel and each of its TFLite exports.",
)
flags.DEFINE_string("workdir", "", "--mode=edge: the trained LM workdir (with its exports).")
flags.DEFINE_enum(
    "peer", "none", ["none", "keras_hub"], "Also time keras-hub's GPT-2, interleaved with ours."
)
flags.DEFINE_integer("steps", 10, "Timed training steps per repeat.")
flags.DEFINE_integer("warmup", 2, "Discarded warm-up steps / generate calls per side.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds (ours, peer, ours, peer, ...).")
flags.DEFINE_integer("decode_batch", 8, "Prompts decoded together.")
flags.DEFINE_integer("decode_prompt_len", 32, "Random prompt tokens per row.")
flags.DEFINE_integer("decode_new_tokens", 96, "Greedy tokens generated per row.")
flags.DEFINE_list(
    "compare_precisions",
    [],
    "Also time training under these runtime.precision values (ours and the peer), "
    "interleaved with the config's; e.g. mixed_bfloat16. Reported in train_by_precision.",
)
flags.DEFINE_string("output", "benchmarks.json", "Where the JSON result is written.")


def _validate_flags() -> None:
    """One-line errors before TensorFlow starts (seconds saved on a typo)."""
    if FLAGS.mode == "edge":
        if not FLAGS.workdir:
            common.fail("--workdir: required with --mode=edge (a trained LM with exports)")
    elif FLAGS.config is None:
        common.fail("--config: required (e.g. configs/bench_gpt_small_cpu.py)")
    for name, least in (
        ("steps", 1),
        ("warmup", 1),
        ("repeats", 1),
        ("decode_batch", 1),
        ("decode_prompt_len", 1),
        ("decode_new_tokens", 1),
    ):
        if FLAGS[name].value < least:
            common.fail(f"--{name}: must be ≥ {least}, got {FLAGS[name].value}")
    for precision in FLAGS.compare_precisions:
        if precision not in PRECISIONS:
            common.fail(
                f"--compare_precisions: {precision!r} is not one of {', '.join(PRECISIONS)}"
            )
    if FLAGS.compare_precisions and FLAGS.mode not in ("train", "all"):
        common.fail("--compare_precisions: times training; use it with --mode=train or all")
    if not FLAGS.output:
        common.fail("--output: must be a file path")
    if os.path.isdir(FLAGS.output):
        common.fail(f"--output: {FLAGS.output} is a directory")


def main(argv) -> None:
    del argv
    _validate_flags()
    if FLAGS.mode == "edge":
        _edge()
        return
    config = common.resolve_config(FLAGS.config, None)
    decode_len = FLAGS.decode_prompt_len + FLAGS.decode_new_tokens
    if FLAGS.mode != "train" and decode_len > config.model.max_length:
        common.fail(
            f"--decode_prompt_len + --decode_new_tokens = {decode_len} exceeds "
            f"config.model.max_length {config.model.max_length}"
        )
    compare = [p for p in dict.fromkeys(FLAGS.compare_precisions) if p != config.runtime.precision]
    common.setup_runtime(config)

    from tfllm.benchmark.runner import BenchSettings, run_benchmark
    from tfllm.utils.io import atomic_write_json

    settings = BenchSettings(
        mode=FLAGS.mode,
        peer=FLAGS.peer,
        steps=FLAGS.steps,
        warmup=FLAGS.warmup,
        repeats=FLAGS.repeats,
        decode_batch=FLAGS.decode_batch,
        decode_prompt_len=FLAGS.decode_prompt_len,
        decode_new_tokens=FLAGS.decode_new_tokens,
        compare_precisions=tuple(compare),
    )
    result = run_benchmark(config, settings)
    result["command"] = " ".join([common.command_name(), *sys.argv[1:]])
    atomic_write_json(FLAGS.output, result)
    print(json.dumps(result, sort_keys=True, default=str), flush=True)
    rows: list[tuple[str, object]] = [
        ("output", FLAGS.output),
        (f"peak GFLOP/s ({result['peak_dtype']} matmul)", result["peak_gflops"]),
    ]
    for key in (
        "train_tokens_per_second",
        "mfu",
        "keras_hub_train_tokens_per_second",
        "train_speedup_vs_keras_hub",
        "decode_tokens_per_second",
        "keras_hub_decode_tokens_per_second",
        "keras_hub_xla_decode_tokens_per_second",
        "decode_speedup_vs_keras_hub",
        "decode_speedup_vs_keras_hub_xla",
        "decode_speedup_headline",
    ):
        if key in result:
            rows.append((key, float(result[key])))
    for precision, entry in result.get("train_by_precision", {}).items():
        tps = entry["ours"]["train_tokens_per_second"]
        rows.append((f"{precision}: train_tokens_per_second", float(tps)))
        for ratio in ("train_speedup_vs_keras_hub", "train_speedup_vs_keras_hub_float32"):
            if ratio in entry:
                rows.append((f"{precision}: {ratio}", float(entry[ratio])))
    # The table goes to stderr: stdout is exactly one JSON line for scripts.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        common.print_summary("tfllm-benchmark", rows)
    finally:
        sys.stdout = stdout


def _edge() -> None:
    from tfllm.benchmark.edge_bench import run_edge_benchmark
    from tfllm.benchmark.runner import environment
    from tfllm.utils.io import atomic_write_json

    result = {
        "mode": "edge",
        **run_edge_benchmark(
            FLAGS.workdir, FLAGS.decode_new_tokens, FLAGS.warmup, max(FLAGS.repeats, 5)
        ),
        "environment": environment(),
        "command": " ".join([common.command_name(), *sys.argv[1:]]),
    }
    atomic_write_json(FLAGS.output, result)
    print(json.dumps(result, sort_keys=True, default=str), flush=True)
    rows: list[tuple[str, object]] = [("output", FLAGS.output)]
    for name, side in result["edge"]["backends"].items():
        rows.append((f"{name} tokens/s", side["tokens_per_second"]))
    for mode, record in result["edge"]["tflite_exports"].items():
        if record.get("perplexity_increase") is not None:
            rows.append((f"litert_{mode} perplexity Δ", f"{record['perplexity_increase']:+.2%}"))
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        common.print_summary("tfllm-benchmark", rows)
    finally:
        sys.stdout = stdout


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
