"""Instruction tuning's data step: prompt/response files -> an `InstructionTask`.

Kept apart from `tfllm.training.run` (which decides *what* trains) because the
pairs need the tokenizer's chat template and their own report line; the
training loop, checkpoints, LoRA and every command after training are the
plain LM's (an instruction-tuned workdir is an LM workdir).
"""

from __future__ import annotations

import os

import ml_collections

from tfllm.data.classification_data import LabelledSplits
from tfllm.data.instruction_data import EncodedPairs, encode_pairs
from tfllm.data.tokenizer_kinds import AnyTokenizer, chat_template
from tfllm.errors import ConfigError
from tfllm.training.tasks import InstructionTask


def instruction_task(
    config: ml_collections.ConfigDict, workdir: str, tokenizer: AnyTokenizer, pairs: LabelledSplits
) -> InstructionTask:
    """Encodes the train/eval pairs (the workdir tokenizer's chat template, if any) and
    prints what will be learned."""
    max_length = int(config.model.max_length)
    template = chat_template(os.path.join(workdir, "tokenizer"))

    def encode(corpus, what: str) -> EncodedPairs:
        return encode_pairs(
            tokenizer, template, corpus.texts, corpus.labels, max_length, what, corpus.sources
        )

    train = encode(pairs.train, "config.data.train_path")
    evaluation = encode(pairs.eval, pairs.eval_source) if pairs.eval is not None else None
    batch = int(config.train.batch_size)
    if evaluation is not None and len(evaluation) < 1:
        raise ConfigError("config.data: the eval split holds no pair")
    if len(train) < batch:
        raise ConfigError(
            f"config.train.batch_size: {batch} exceeds the {len(train)} training pairs"
        )
    formatted = "the model's chat template" if template else "prompt, newline, response, eos"
    cut = f"; {train.truncated} cut at {max_length + 1} tokens" if train.truncated else ""
    dropped = f", {train.dropped} dropped (prompt too long)" if train.dropped else ""
    held = (
        f"{len(evaluation):,} eval pairs ({pairs.eval_source})" if evaluation else "no eval split"
    )
    print(
        f"Instruction data: {len(train):,} pairs from {pairs.train_source} ({formatted}; loss on "
        f"{train.response_tokens:,} response tokens{cut}{dropped}), {held}",
        flush=True,
    )
    return InstructionTask(train, evaluation, eval_batches=int(config.train.eval_batches))
