#!/usr/bin/env python
"""Data-parallel scaling on one host: 1 worker vs 2 multi_worker processes.

  python scripts/distributed_scaling.py --config=configs/gpt_tiny.py --steps=40 \
      --out=docs/measurements/scaling_gpt_tiny.json

Runs `tfllm-train` three times, every process with 1 intra-op and 1
inter-op thread so that each worker owns one core:

  one       1 process, the global batch B            (the baseline)
  half      1 process, batch B/2                     (what each worker computes)
  two       2 multi_worker processes, global batch B (tfllm-launch)

and reports training tokens/s (median of the inner loops after the first,
from each run's metrics.json), the speed-up two/one, the scaling efficiency
two / (2 x one), and the share of a two-worker step that is not compute:
1 - step(half) / step(two), i.e. the gradient all-reduce plus waiting for the
slower worker. A fourth, tiny cluster times the all-reduce of a
gradient-sized buffer alone, its share of the two-worker step being the
all-reduce share. Prints a markdown table row and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import tensorflow as tf


def train(
    workdir: str, config: str, steps: int, batch: int, extra: list[str], workers: int = 1
) -> dict:
    args = [
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.train.num_steps={steps}",
        f"--config.train.batch_size={batch}",
        "--config.train.steps_per_loop=5",
        f"--config.train.warmup_steps={steps // 4}",
        f"--config.train.eval_every={steps}",
        f"--config.train.checkpoint_every={steps}",
        "--config.train.eval_batches=1",
        "--config.train.sample_tokens=0",
        "--config.runtime.intra_op_threads=1",
        "--config.runtime.inter_op_threads=1",
        *extra,
    ]
    command = [sys.executable, "-m", "tfllm.cli.train", *args]
    if workers > 1:
        command = [
            sys.executable, "-m", "tfllm.launch", f"--workers={workers}", "--",
            *command, "--config.runtime.strategy=multi_worker",
        ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"distributed_scaling: {' '.join(command[:6])}... failed:\n{proc.stderr[-2000:]}")
    with open(os.path.join(workdir, "metrics.json")) as f:
        return json.load(f)


def allreduce_probe(num_floats: int, repeats: int = 20) -> None:
    """Runs inside each worker of a 2-worker cluster: times the all-reduce alone.

    One SUM all-reduce of `num_floats` float32 values (the gradient size),
    the same collective the training step issues, with no compute around it.
    Worker 0 prints the median milliseconds.
    """
    import statistics
    import time

    from tfllm.distribute.strategy import configure_threads

    configure_threads(1, 1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    @tf.function
    def reduce_once():
        values = strategy.run(lambda: tf.ones([num_floats]))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)[0]

    reduce_once()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reduce_once().numpy()
        times.append(1000 * (time.perf_counter() - start))
    if strategy.cluster_resolver.task_id == 0:
        print(f"ALLREDUCE_MS {statistics.median(times):.3f}", flush=True)


def measure_allreduce(num_floats: int) -> float:
    command = [
        sys.executable, "-m", "tfllm.launch", "--workers=2", "--",
        sys.executable, os.path.abspath(__file__), f"--allreduce_probe={num_floats}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if "ALLREDUCE_MS" in line:
            return float(line.split()[-1])
    sys.exit(f"distributed_scaling: the all-reduce probe failed:\n{proc.stdout[-2000:]}")


def _config_batch(path: str) -> int:
    spec = importlib.util.spec_from_file_location("scaling_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.get_config().train.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/gpt_tiny.py")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=0, help="global batch (0: the config's)")
    parser.add_argument("--out", default="", help="JSON file for the numbers")
    parser.add_argument("--allreduce_probe", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_probe:
        allreduce_probe(args.allreduce_probe)
        return

    root = tempfile.mkdtemp(prefix="tfllm-scaling-")
    try:
        batch = args.batch or _config_batch(args.config)
        one = train(os.path.join(root, "one"), args.config, args.steps, batch, [])
        tokenizer = [f"--config.tokenizer.path={os.path.join(root, 'one', 'tokenizer')}"]
        half = train(os.path.join(root, "half"), args.config, args.steps, batch // 2, tokenizer)
        two = train(os.path.join(root, "two"), args.config, args.steps, batch, tokenizer, 2)
        allreduce_ms = measure_allreduce(int(one["num_params"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def step_ms(metrics: dict, global_batch: int) -> float:
        return 1000.0 * global_batch / metrics["examples_per_second"]

    result = {
        "config": args.config,
        "steps": args.steps,
        "global_batch": batch,
        "num_params": one["num_params"],
        "tokens_per_second": {
            "one": one["tokens_per_second"],
            "half": half["tokens_per_second"],
            "two": two["tokens_per_second"],
        },
        "step_ms": {
            "one": step_ms(one, batch),
            "half": step_ms(half, batch // 2),
            "two": step_ms(two, batch),
        },
        "tensorflow": tf.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    result["speedup"] = result["tokens_per_second"]["two"] / result["tokens_per_second"]["one"]
    result["scaling_efficiency"] = result["speedup"] / 2
    result["non_compute_share"] = 1 - result["step_ms"]["half"] / result["step_ms"]["two"]
    result["allreduce_ms"] = allreduce_ms
    result["allreduce_share"] = allreduce_ms / result["step_ms"]["two"]
    print(
        f"| {args.config} ({one['num_params'] / 1e6:.2f}M params, batch {batch}) "
        f"| {one['tokens_per_second']:,.0f} | {two['tokens_per_second']:,.0f} "
        f"| {result['speedup']:.2f}x | {100 * result['scaling_efficiency']:.0f}% "
        f"| {result['step_ms']['half']:.0f} ms | {result['step_ms']['two']:.0f} ms "
        f"| {100 * result['non_compute_share']:.0f}% | {allreduce_ms:.1f} ms "
        f"({100 * result['allreduce_share']:.0f}%) |"
    )
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
