"""Where the journey's parts live in its workdir, and the commands that redo them.

Shared by the journey (which writes the parts) and its report (which reads
them back), so neither imports the other's module: the journey calls the
report writer, the report reads what the journey wrote.
"""

from __future__ import annotations

import os

import ml_collections

CLASSIFIER_PARTS = ("transformer", "cnn", "mlp")
# The family that is fine-tuned from the LM, pruned and distilled.
FINETUNED = "transformer"


def part_dir(workdir: str, part: str) -> str:
    if part == "lm":
        return os.path.join(workdir, "lm")
    if part == "distil":
        return os.path.join(workdir, "distil")
    return os.path.join(workdir, "classifiers", part)


def benchmark_command(
    journey: ml_collections.ConfigDict, lm_config: ml_collections.ConfigDict, output: str
) -> str:
    """The standalone `tfllm-benchmark` command that measures the same thing."""
    m, b = lm_config.model, journey.benchmark
    dims = (
        f"--config.tokenizer.vocab_size={lm_config.tokenizer.vocab_size} "
        f"--config.model.max_length={m.max_length} --config.model.num_layers={m.num_layers} "
        f"--config.model.num_heads={m.num_heads} --config.model.hidden_dim={m.hidden_dim} "
        f"--config.model.intermediate_dim={m.intermediate_dim} "
        f"--config.train.batch_size={lm_config.train.batch_size}"
    )
    return (
        f"tfllm-benchmark --config=configs/gpt_tiny.py {dims} --mode=all --peer={b.peer} "
        f"--steps={b.steps} --warmup={b.warmup} --repeats={b.repeats} "
        f"--decode_batch={b.decode_batch} --decode_prompt_len={b.decode_prompt_len} "
        f"--decode_new_tokens={b.decode_new_tokens} --output={output}"
    )
