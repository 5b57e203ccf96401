"""Fine-tunes an imported backbone on SST-2 with a recipe (configs/minilm_sst2.py) and records it.

    ../shared/tools/fetch-pretrained
    python scripts/measure_minilm_sst2.py --seed=0 \\
        --output=docs/measurements/minilm_sst2_seed0.json
    python scripts/measure_minilm_sst2.py --config=configs/smollm2_lora_sst2.py \\
        --minilm_workdir=runs/smollm2 --source=smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --workdir=runs/smollm2_sst2 --splits=test \\
        --output=docs/measurements/smollm2_lora_sst2_seed0.json

One seed per call (the issue asks for three: call it with --seed=1 and 2 and
compare the records). Each stage runs as the documented command in its own
process: `tfllm-import` (skipped when --minilm_workdir already holds an
import), `tfllm-train`, then `tfllm-evaluate` on the eval split (SST-2's dev
rows, where recipes are chosen) and on the test split (GLUE's 872-sentence
dev set, the number papers report). The record keeps every command, its wall
time and raw stdout, the final metrics.json, the machine and the versions.

`--curve_every=N` checkpoints every N steps, keeps them all and afterwards
scores each on the test split (`tfllm-evaluate --step`): test accuracy against
training wall time (a checkpoint's file time minus the training command's
start), and the first checkpoint at or above `--target` (the issue's
"time to 90 %"). The curve only reports; nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from tfllm.utils.io import atomic_write_json
from tfllm.utils.machine import cpu_model


def _run(command: list[str]) -> dict:
    """Runs one command, echoing its stdout; returns command, exit, start, wall time, stdout."""
    print("$", " ".join(command), flush=True)
    started_at = time.time()
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    print(proc.stdout, flush=True)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr, flush=True)
    return {
        "command": " ".join(command),
        "exit_code": proc.returncode,
        "started_at": round(started_at, 1),
        "wall_s": round(wall, 1),
        "stdout": proc.stdout,
    }


def _versions() -> dict:
    import keras
    import keras_hub
    import tensorflow as tf

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "tfllm_commit": commit + " (plus the uncommitted working tree of this change)",
    }


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def _curve(python: list[str], workdir: str, train_started: float, target: float) -> dict:
    """Test accuracy of every kept checkpoint, by step and by seconds since training began."""
    checkpoints = os.path.join(workdir, "checkpoints")
    steps = sorted(
        int(name[len("ckpt-") : -len(".index")])
        for name in os.listdir(checkpoints)
        if name.startswith("ckpt-") and name.endswith(".index")
    )
    points = []
    for step in steps:
        index = os.path.join(checkpoints, f"ckpt-{step}.index")
        written = os.path.getmtime(index) - train_started
        stage = _run(
            [*python, "tfllm.cli.evaluate", f"--workdir={workdir}", "--split=test",
             f"--step={step}"]
        )  # fmt: skip
        if stage["exit_code"]:
            raise SystemExit(f"curve: evaluating step {step} failed:\n{stage['stdout'][-2000:]}")
        accuracy = _metrics(workdir)["by_step"][str(step)]["test_split"]["accuracy"]
        points.append(
            {"step": step, "train_seconds": round(written, 1), "test_accuracy": accuracy,
             "evaluate_stdout": stage["stdout"]}
        )  # fmt: skip
    first = next((p for p in points if p["test_accuracy"] >= target), None)
    if first is not None:
        first = {k: first[k] for k in ("step", "train_seconds", "test_accuracy")}
    return {"target": target, "points": points, "first_at_target": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
    parser.add_argument("--pretrained", default=default)
    parser.add_argument("--config", default="configs/minilm_sst2.py", help="the recipe")
    parser.add_argument("--minilm_workdir", default="runs/minilm", help="the imported backbone")
    parser.add_argument("--source", default="minilm", help="what to import, under --pretrained")
    parser.add_argument("--workdir", default="runs/minilm_sst2_seed0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="docs/measurements/minilm_sst2_seed0.json")
    parser.add_argument(
        "--curve_every",
        type=int,
        default=0,
        help="checkpoint every N steps, keep all, score each on test (0: off)",
    )
    parser.add_argument("--target", type=float, default=0.90, help="the curve's target accuracy")
    parser.add_argument(
        "--splits",
        default="eval,test",
        help="splits tfllm-evaluate scores after training; training's own last eval already "
        "reads every eval row (SmolLM2: 5-8 min on 2 cores), so --splits=test skips the repeat",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra --config.* flags for tfllm-train (recorded)"
    )
    args = parser.parse_args()
    unknown = set(args.splits.split(",")) - {"eval", "train", "test"}
    if unknown:
        parser.error(f"--splits: {','.join(sorted(unknown))} is not eval, train or test")
    python = [sys.executable, "-m"]
    load_at_start = os.getloadavg()  # other jobs on the box slow every stage: recorded
    stages = {}
    if not os.path.isfile(os.path.join(args.minilm_workdir, "config.json")):
        stages["import"] = _run(
            [*python, "tfllm.cli.import_checkpoint",
             f"--source={os.path.join(args.pretrained, args.source)}",
             f"--workdir={args.minilm_workdir}"]
        )  # fmt: skip
    curve_flags = []
    if args.curve_every:
        curve_flags = [f"--config.train.checkpoint_every={args.curve_every}",
                       "--config.train.max_checkpoints=1000"]  # fmt: skip
    stages["train"] = _run(
        [*python, "tfllm.cli.train", f"--config={args.config}",
         f"--workdir={args.workdir}", f"--config.train.init_from={args.minilm_workdir}",
         f"--config.train.seed={args.seed}", *curve_flags, *args.overrides]
    )  # fmt: skip
    train_metrics = _metrics(args.workdir) if not stages["train"]["exit_code"] else {}
    for split in args.splits.split(","):
        stages[f"evaluate_{split}"] = _run(
            [*python, "tfllm.cli.evaluate", f"--workdir={args.workdir}", f"--split={split}"]
        )
    curve = None
    if args.curve_every and not stages["train"]["exit_code"]:
        curve = _curve(python, args.workdir, stages["train"]["started_at"], args.target)
    final = _metrics(args.workdir) if not stages["train"]["exit_code"] else {}
    test = final.get("test_split", {})
    record = {
        "what": f"{args.config} from {args.minilm_workdir}: fine-tuned on SST-2, one seed",
        "seed": args.seed,
        "steps": train_metrics.get("step"),
        "train_wall_s": stages["train"]["wall_s"],
        "dev_accuracy": train_metrics.get("accuracy"),
        "dev_macro_f1": train_metrics.get("macro_f1"),
        "dev_examples": f"{train_metrics.get('num_examples')} rows of SST-2 dev.tsv (6,735 held "
        "out of GLUE's train set), scored by training's last eval",
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "test_examples": test.get("num_examples"),
        "curve": curve,
        "train_metrics": train_metrics,
        "stages": stages,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores ({platform.machine()})",
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python scripts/measure_minilm_sst2.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(args.output, record)
    print(
        f"seed {args.seed}: {record['steps']} steps in {record['train_wall_s']} s; dev accuracy "
        f"{record['dev_accuracy']}, test accuracy {record['test_accuracy']} -> {args.output}"
    )
    if any(stage["exit_code"] for stage in stages.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
