"""SmolLM2 (or any imported LM) instruction-tuned with LoRA on SST-2 prompt/response
pairs: held-out response perplexity and answer accuracy before and after.

    python scripts/measure_instruction_tuning.py --base=runs/smollm2 \\
        --workdir=runs/smollm2_sst2_pairs \\
        --output=docs/measurements/smollm2_instruction_sst2.json

The pairs are the documented ones (docs/finetuning.md, "Instruction tuning"):
"Is this movie review positive or negative?" + a review in, "positive" or
"negative" out. Training pairs come from the bundled SST-2 train split,
held-out pairs from its test split (GLUE dev: the 872 sentences every SST-2
test number here uses; the bundled dev split is sub-phrases of training
sentences and would overstate the result), so no held-out sentence was
trained on. The fine-tune is the documented
`tfllm-train --config.data.response_field=...` command in a fresh process
under GNU time.

Two measures, the same for the base and the tuned model, computed here on
rows encoded exactly as training encodes them (`encode_pairs`: the model's
chat template, loss on response tokens only):

- response perplexity: exp(mean NLL) over the held-out responses' tokens
  (including the `<|im_end|>` that closes the turn) — what `tfllm-evaluate`
  reports as `eval_response_perplexity` for the tuned run (recorded beside it
  as a cross-check);
- answer accuracy: each held-out review is scored with both answers and the
  one with the lower summed response NLL is the model's label (a
  likelihood-ranked zero-shot classifier before tuning), so the base model's
  figure is not hostage to its free-text phrasing.

The tuned model is what `load_trained` returns (adapters merged), i.e. what
every export serves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

from tfllm.utils.io import atomic_write_json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from measure_lora import _cli, _machine, _run, _versions  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "Is this movie review positive or negative?\n"
ANSWERS = ("negative", "positive")  # SST-2 label 0, 1


def write_pairs(split: str, path: str, limit: int, seed: int) -> int:
    """SST-2 `split` as jsonl prompt/response pairs (a seeded sample of `limit` rows
    when `limit` > 0); returns the row count."""
    from tfllm.data.corpus import bundled_paths, read_documents

    rows = read_documents(bundled_paths("sst2")[split], "tsv", "sentence", "label")
    pairs = list(zip(rows.texts, rows.labels, strict=True))
    if limit and limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, limit)
    with open(path, "w", encoding="utf-8") as f:
        for text, label in pairs:
            answer = ANSWERS[int(label)]
            f.write(json.dumps({"prompt": QUESTION + text, "response": answer}) + "\n")
    return len(pairs)


def score(workdir: str, pairs_path: str, max_length: int, batch: int) -> dict:
    """Response perplexity and answer accuracy of `workdir`'s model on the pairs."""
    import numpy as np
    import tensorflow as tf

    from tfllm.data.instruction_data import encode_pairs, length_sorted_batches
    from tfllm.data.tokenizer_kinds import chat_template
    from tfllm.evaluation.predict import token_cross_entropy
    from tfllm.inference.loading import load_trained

    started = time.perf_counter()
    trained = load_trained(workdir)
    template = chat_template(os.path.join(workdir, "tokenizer"))
    rows = [json.loads(line) for line in open(pairs_path, encoding="utf-8")]
    prompts = [r["prompt"] for r in rows]
    gold = np.array([ANSWERS.index(r["response"]) for r in rows])
    # One encoding per candidate answer; a row whose prompt alone fills max_length
    # would be dropped and misalign the candidates, so none may be.
    encoded = [
        encode_pairs(trained.tokenizer, template, prompts, [a] * len(prompts), max_length,
                     f"{pairs_path} ({a})")
        for a in ANSWERS
    ]  # fmt: skip
    if any(e.dropped for e in encoded):
        raise SystemExit(f"{pairs_path}: prompts longer than max_length={max_length}")

    @tf.function(jit_compile=True)
    def row_nll(ids, weights):
        ce = token_cross_entropy(ids[:, 1:], trained.model(ids[:, :-1], training=False))
        return tf.reduce_sum(tf.cast(ce, tf.float32) * weights, axis=1)

    nll = np.zeros([len(ANSWERS), len(rows)])
    for k, e in enumerate(encoded):
        for index, ids, weights in length_sorted_batches(e, batch):
            nll[k, index] = row_nll(tf.constant(ids), tf.constant(weights))
    gold_nll = nll[gold, np.arange(len(rows))]
    gold_tokens = np.array([encoded[g].weights[i].sum() for i, g in enumerate(gold)])
    predicted = nll.argmin(axis=0)
    loss = float(gold_nll.sum() / gold_tokens.sum())
    return {
        "response_perplexity": round(math.exp(loss), 4),
        "response_loss": round(loss, 5),
        "response_tokens": int(gold_tokens.sum()),
        "answer_accuracy": round(float((predicted == gold).mean()), 4),
        "predicted_positive_fraction": round(float(predicted.mean()), 4),
        "pairs": len(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="an imported LM workdir (tfllm-import)")
    parser.add_argument("--workdir", required=True, help="where the LoRA run is written")
    parser.add_argument("--output", required=True)
    parser.add_argument("--train_pairs", type=int, default=0, help="sample size; 0 = all")
    parser.add_argument("--eval_pairs", type=int, default=0, help="sample size; 0 = all 872")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_batch", type=int, default=16)
    args = parser.parse_args()

    os.makedirs(args.workdir + "_pairs", exist_ok=True)
    train_path = os.path.join(args.workdir + "_pairs", "train.jsonl")
    eval_path = os.path.join(args.workdir + "_pairs", "test.jsonl")
    n_train = write_pairs("train", train_path, args.train_pairs, args.seed)
    n_eval = write_pairs("test", eval_path, args.eval_pairs, args.seed)
    print(f"pairs: {n_train:,} train, {n_eval} held out", flush=True)

    before = score(args.base, eval_path, args.max_length, args.eval_batch)
    print(f"base: {before}", flush=True)

    steps = args.steps
    command = [
        *_cli("train"), f"--config={args.base}/config.json",
        f"--config.train.init_from={args.base}", f"--workdir={args.workdir}",
        f"--config.data.train_path={train_path}", f"--config.data.eval_path={eval_path}",
        "--config.data.format=jsonl", "--config.data.text_field=prompt",
        "--config.data.response_field=response",
        f"--config.model.max_length={args.max_length}",
        f"--config.train.batch_size={args.batch_size}", f"--config.train.num_steps={steps}",
        f"--config.train.learning_rate={args.learning_rate}",
        f"--config.train.warmup_steps={args.warmup_steps}", f"--config.train.seed={args.seed}",
        f"--config.train.lora_rank={args.rank}", f"--config.train.lora_targets={args.targets}",
        "--config.train.steps_per_loop=10", f"--config.train.eval_every={steps}",
        f"--config.train.checkpoint_every={steps}", "--config.train.eval_batches=4",
        "--config.train.sample_tokens=0",
    ]  # fmt: skip
    print(" ".join(command[2:]), flush=True)
    run = _run(command)
    metrics = json.load(open(os.path.join(args.workdir, "metrics.json")))
    history = json.load(open(os.path.join(args.workdir, "history.json")))["history"]
    after = score(args.workdir, eval_path, args.max_length, args.eval_batch)
    print(f"tuned: {after}", flush=True)
    evaluate = _run([*_cli("evaluate"), f"--workdir={args.workdir}"])
    cross_check = json.load(open(os.path.join(args.workdir, "metrics.json")))

    record = {
        "what": "SST-2 as instruction pairs: held-out (GLUE dev = bundled test) response "
        "perplexity and likelihood-ranked answer accuracy of an imported LM before and after "
        "a LoRA instruction fine-tune (tfllm-train, loss on response tokens only)",
        "script": "scripts/measure_instruction_tuning.py",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "versions": _versions(),
        "base": os.path.relpath(os.path.abspath(args.base), REPO),
        "command": " ".join(command[2:]),
        "prompt": QUESTION + "<review>",
        "train_pairs": n_train,
        "before": before,
        "after": after,
        "response_perplexity_change": round(
            after["response_perplexity"] / before["response_perplexity"] - 1, 4
        ),
        "tfllm_evaluate_eval_response_perplexity": cross_check.get("eval_response_perplexity"),
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "train_losses": [(h["step"], round(h["loss"], 4)) for h in history],
        **run,
        "evaluate_wall_s": evaluate["wall_s"],
    }
    atomic_write_json(args.output, record)


if __name__ == "__main__":
    main()
