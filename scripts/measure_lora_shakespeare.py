"""SmolLM2 (or any imported LM) fine-tuned with LoRA on Tiny Shakespeare: held-out
perplexity before and after, wall time and peak RSS of the fine-tune.

    python scripts/measure_lora_shakespeare.py --base=runs/smollm2 \\
        --workdir=runs/smollm2_lora_shakespeare \\
        --output=docs/measurements/smollm2_lora_shakespeare.json

The fine-tune is the documented command (`tfllm-train --config=BASE/config.json
--config.train.init_from=BASE --config.train.lora_rank=R ...`) in a fresh
process under GNU time. Perplexity is measured in this process on the exact
tokens `tfllm-train` holds out (the last 10 % of the token stream,
`tfllm.data.lm_data.split_ids`), cut into non-overlapping windows of
`--eval_len` tokens, every window of the split, the same windows for the base
and the fine-tuned model; the fine-tuned model is what `load_trained` returns
(adapters merged into the kernels), so the number is what every export serves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from tfllm.utils.io import atomic_write_json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from measure_lora import _cli, _machine, _run, _versions  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_windows(workdir: str, eval_len: int):
    """The eval split's tokens as `[N, eval_len + 1]` windows (inputs and targets)."""
    import numpy as np

    from tfllm.config import load_workdir_config
    from tfllm.data.sources import lm_token_streams, load_text_splits
    from tfllm.data.tokenizer_kinds import load_tokenizer

    config = load_workdir_config(workdir)
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    train, held_out = lm_token_streams(config, tokenizer, load_text_splits(config.data))
    n_ids = len(train) + len(held_out)
    count = (len(held_out) - 1) // eval_len
    rows = [held_out[k * eval_len : k * eval_len + eval_len + 1] for k in range(count)]
    return np.stack(rows), n_ids, len(held_out)


def perplexity(workdir: str, windows, batch: int) -> dict:
    """exp(mean token NLL) of `workdir`'s model (LoRA merged) over every window."""
    import tensorflow as tf

    from tfllm.inference.loading import load_trained

    started = time.perf_counter()
    model = load_trained(workdir).model
    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        rows = tf.constant(windows[start : start + batch])
        logits = tf.cast(forward(rows[:, :-1]), tf.float32)
        nll = tf.keras.losses.sparse_categorical_crossentropy(rows[:, 1:], logits, from_logits=True)
        total += float(tf.reduce_sum(tf.cast(nll, tf.float64)))
        count += int(tf.size(nll))
    return {
        "perplexity": round(math.exp(total / count), 4),
        "nll": round(total / count, 5),
        "tokens": count,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="an imported LM workdir (tfllm-import)")
    parser.add_argument("--workdir", required=True, help="where the LoRA run is written")
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="all")
    parser.add_argument("--eval_len", type=int, default=512)
    parser.add_argument("--eval_batch", type=int, default=4)
    args = parser.parse_args()

    windows, n_ids, n_held_out = held_out_windows(args.base, args.eval_len)
    print(f"held out: {n_held_out:,} of {n_ids:,} tokens, {len(windows)} windows", flush=True)
    before = perplexity(args.base, windows, args.eval_batch)
    print(f"base perplexity {before['perplexity']}", flush=True)

    steps = args.steps
    command = [
        *_cli("train"), f"--config={args.base}/config.json",
        f"--config.train.init_from={args.base}", f"--workdir={args.workdir}",
        f"--config.model.max_length={args.max_length}",
        f"--config.train.batch_size={args.batch_size}", f"--config.train.num_steps={steps}",
        f"--config.train.learning_rate={args.learning_rate}",
        f"--config.train.warmup_steps={args.warmup_steps}",
        f"--config.train.lora_rank={args.rank}", f"--config.train.lora_targets={args.targets}",
        "--config.train.steps_per_loop=10", f"--config.train.eval_every={steps}",
        f"--config.train.checkpoint_every={steps}", "--config.train.eval_batches=4",
        "--config.train.sample_tokens=0",
    ]  # fmt: skip
    print(" ".join(command[2:]), flush=True)
    run = _run(command)
    metrics = json.load(open(os.path.join(args.workdir, "metrics.json")))
    history = json.load(open(os.path.join(args.workdir, "history.json")))["history"]
    after = perplexity(args.workdir, windows, args.eval_batch)
    change = after["perplexity"] / before["perplexity"] - 1
    print(f"LoRA perplexity {after['perplexity']} ({change:+.1%})", flush=True)

    record = {
        "what": "held-out Tiny Shakespeare perplexity of an imported LM before and after a "
        "LoRA fine-tune (tfllm-train), the fine-tune's wall time and peak RSS",
        "script": "scripts/measure_lora_shakespeare.py",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "versions": _versions(),
        "base": os.path.relpath(os.path.abspath(args.base), REPO),
        "command": " ".join(command[2:]),
        "eval": {
            "windows": len(windows),
            "window_tokens": args.eval_len,
            "held_out_tokens": n_held_out,
            "corpus_tokens": n_ids,
        },  # fmt: skip
        "before": before,
        "after": after,
        "perplexity_change": round(change, 4),
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "optimizer_state_bytes": metrics["optimizer_state_bytes"],
        "train_tokens": steps * args.batch_size * args.max_length,
        "train_losses": [(h["step"], round(h["loss"], 4)) for h in history],
        "run_eval_loss": metrics.get("eval_loss"),
        **run,
    }
    atomic_write_json(args.output, record)


if __name__ == "__main__":
    main()
