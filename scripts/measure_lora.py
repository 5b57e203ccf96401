"""Measures LoRA against full fine-tuning: trainable parameters, optimizer state, step
time, peak RSS and checkpoint size, on the same model, data and batch.

    python scripts/measure_lora.py                       # tiny GPT + llama_tiny fixture
    python scripts/measure_lora.py --models=smollm2      # SmolLM2-135M (fetched GGUF)
    python scripts/measure_lora.py --models=gpt_tiny,llama_tiny,smollm2 \\
        --output docs/measurements/lora_vs_full.json
    python scripts/measure_lora.py --models=smollm2 --remat  # + both with block remat

Each fine-tune is the documented command (`tfllm-train --config=BASE/config.json
--config.train.init_from=BASE ...`, plus `--config.train.lora_rank=R` for LoRA) in a
fresh process under GNU time (`/usr/bin/time -v`: the kernel's peak RSS of the whole
process; the load averages around it are recorded, since a shared machine slows
steps). One step per inner loop, so `history.json` holds one timing per step; the
first step (tracing) is left out of the median. Trainable parameters and optimizer
state bytes are what the run wrote in `metrics.json`. Results of several `--models`
calls are merged into one JSON file (a model's entry is replaced when measured again).
`--remat` adds full and LoRA runs with `config.runtime.remat` (gradient checkpointing of
every block); every variant's ratios are against plain full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from tfllm.utils.io import atomic_write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
PRETRAINED = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
SMOLLM2 = os.path.join(PRETRAINED, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

# Per model: how the base workdir is made, and the fine-tune's window, batch and steps.
MODELS = {
    "gpt_tiny": dict(max_length=128, batch_size=16, steps=12, learning_rate=1e-3),
    "llama_tiny": dict(max_length=128, batch_size=16, steps=12, learning_rate=1e-3),
    "smollm2": dict(max_length=256, batch_size=4, steps=6, learning_rate=1e-4),
}


def _cli(name: str) -> list[str]:
    return [sys.executable, "-m", f"tfllm.cli.{name}"]


def _run(command: list[str]) -> dict:
    """Runs `command` under GNU time; its wall time, peak RSS and output tail."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    wall = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(peak.group(1)) / 1024, 1) if peak else None,
        # 1-minute load averages before and after: other work slows every step alike.
        "load_avg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "stdout_tail": proc.stdout[-1500:],
    }


def _base(name: str, tmp: str, text: str) -> str:
    """The workdir every fine-tune of `name` starts from (init_from)."""
    base = os.path.join(tmp, f"{name}_base")
    if name == "gpt_tiny":  # a tfllm GPT of its own: configs/gpt_tiny.py, briefly trained
        _run([*_cli("train"), "--config=configs/gpt_tiny.py", f"--workdir={base}",
              f"--config.data.train_path={text}", "--config.data.format=text",
              "--config.train.num_steps=20", "--config.train.steps_per_loop=10",
              "--config.train.eval_every=20", "--config.train.checkpoint_every=20",
              "--config.train.eval_batches=1", "--config.train.sample_tokens=0"])  # fmt: skip
        return base
    source = (
        os.path.join(REPO, "tests", "fixtures", "pretrained", "llama_tiny")
        if name == "llama_tiny"
        else SMOLLM2
    )
    _run([*_cli("import_checkpoint"), f"--source={source}", f"--workdir={base}"])
    return base


def _fine_tune(base: str, workdir: str, text: str, spec: dict, lora: dict | None) -> dict:
    steps = int(spec["steps"])
    command = [
        *_cli("train"), f"--config={base}/config.json", f"--config.train.init_from={base}",
        f"--workdir={workdir}", f"--config.data.train_path={text}", "--config.data.format=text",
        f"--config.model.max_length={spec['max_length']}",
        f"--config.train.batch_size={spec['batch_size']}", f"--config.train.num_steps={steps}",
        f"--config.train.learning_rate={spec['learning_rate']}", "--config.train.warmup_steps=0",
        "--config.train.steps_per_loop=1", f"--config.train.eval_every={steps}",
        f"--config.train.checkpoint_every={steps}", "--config.train.eval_batches=1",
        "--config.train.sample_tokens=0",
    ]  # fmt: skip
    for key, value in (lora or {}).items():  # "train.lora_rank", "runtime.remat", ...
        command.append(f"--config.{key}={value}")
    run = _run(command)
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    history = json.load(open(os.path.join(workdir, "history.json")))["history"]
    tokens = int(spec["batch_size"]) * int(spec["max_length"])
    step_s = [tokens / h["tokens_per_second"] for h in history if h.get("tokens_per_second")]
    prefix = os.path.join(workdir, "checkpoints", f"ckpt-{steps}")
    checkpoint = sum(
        os.path.getsize(os.path.join(os.path.dirname(prefix), f))
        for f in os.listdir(os.path.dirname(prefix))
        if f.startswith(os.path.basename(prefix) + ".")
    )
    return {
        "command": " ".join(command[2:]).replace(base, "BASE").replace(workdir, "W"),
        "lora": lora or None,
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "lora_params": metrics["lora_params"],
        "optimizer_state_bytes": metrics["optimizer_state_bytes"],
        "step_seconds": [round(s, 4) for s in step_s],
        "median_step_s": round(statistics.median(step_s[1:] or step_s), 4),
        "losses": [round(h["loss"], 4) for h in history],
        "eval_loss": metrics.get("eval_loss"),
        "checkpoint_bytes": checkpoint,
        # What a checkpoint without the (re-readable) base weights would hold.
        "adapters_and_state_bytes": 4 * metrics["trainable_params"]
        + metrics["optimizer_state_bytes"],
        **run,
    }


def _versions() -> dict:
    import keras
    import keras_hub
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_hub": keras_hub.__version__, "python": platform.python_version()}  # fmt: skip


def _machine() -> dict:
    cpu = ""
    if os.path.isfile("/proc/cpuinfo"):
        found = re.search(r"model name\s*:\s*(.+)", open("/proc/cpuinfo").read())
        cpu = found.group(1) if found else ""
    return {"cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt_tiny,llama_tiny")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="attention")
    parser.add_argument("--text", default=os.path.join(SHARED, "tinyshakespeare", "input.txt"))
    parser.add_argument("--batch_size", type=int, default=0, help="0: the model's own (MODELS)")
    parser.add_argument("--output", default="docs/measurements/lora_vs_full.json")
    parser.add_argument(
        "--remat", action="store_true",
        help="also run both with config.runtime.remat (block checkpointing)",
    )  # fmt: skip
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown} (known: {', '.join(MODELS)})")
    record = json.load(open(args.output)) if os.path.isfile(args.output) else {"models": {}}
    record.update(
        {"script": "scripts/measure_lora.py", "machine": _machine(), "versions": _versions()}
    )
    lora = {"train.lora_rank": args.rank, "train.lora_targets": args.targets}
    modes = [("full", None), ("lora", lora)]
    if args.remat:
        remat = {"runtime.remat": "true"}
        modes += [("full_remat", remat), ("lora_remat", {**lora, **remat})]
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name}: base", flush=True)
            base = _base(name, tmp, args.text)
            spec = dict(MODELS[name])
            key = name
            if args.batch_size:  # recorded beside the default batch's entry
                spec["batch_size"], key = args.batch_size, f"{name}@batch{args.batch_size}"
            out = {"spec": spec, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            for mode, settings in modes:
                print(f"{name}: {mode}", flush=True)
                out[mode] = _fine_tune(base, os.path.join(tmp, mode), args.text, spec, settings)
            full = out["full"]
            ratios = ("trainable_params", "optimizer_state_bytes", "median_step_s",
                      "peak_rss_mb", "checkpoint_bytes")  # fmt: skip
            for mode, _ in modes[1:]:  # each against plain full fine-tuning
                out[f"{mode}_over_full"] = {k: round(out[mode][k] / full[k], 4) for k in ratios}
                print(mode, json.dumps(out[f"{mode}_over_full"]), flush=True)
            record["models"][key] = out
    atomic_write_json(args.output, record)


if __name__ == "__main__":
    main()
