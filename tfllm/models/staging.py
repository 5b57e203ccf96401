"""How the GPT backbone splits over devices: the kernels tensor parallelism
cuts, the pipeline stage of every variable, and the staged loss.

`tfllm.distribute` places variables and runs collectives; it does not know
a GPT's layers. The models hand it what it needs through three attributes
(`GPT` and `TransformerClassifier` expose them):

- `tensor_parallel_splits`: (variable path suffix, rank, axis split over the
  mesh's `model` axis) — the Megatron split, see `MEGATRON_SPLITS`;
- `pipeline_stage(path, block_stage)`: which stage holds a variable;
- `staged_per_example_loss(...)`: one step's loss run stage by stage over
  micro-batches, with the tied head on the last stage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

# Inside every transformer block the Q/K/V projections and the first MLP matmul
# are column-parallel (heads and FFN units split), the attention output
# projection and the second MLP matmul row-parallel; DTensor then inserts one
# all-reduce after each row-parallel matmul. Everything else (embeddings,
# LayerNorms, the tied head, a classifier's head) is replicated.
# EinsumDense kernels: query/key/value [d, heads, head_dim], output [heads, head_dim, d].
MEGATRON_SPLITS: tuple[tuple[str, int, int], ...] = (
    ("self_attention/query/kernel", 3, 1),
    ("self_attention/key/kernel", 3, 1),
    ("self_attention/value/kernel", 3, 1),
    ("self_attention/query/bias", 2, 0),
    ("self_attention/key/bias", 2, 0),
    ("self_attention/value/bias", 2, 0),
    ("self_attention/attention_output/kernel", 3, 0),
    ("feedforward_intermediate_dense/kernel", 2, 1),
    ("feedforward_intermediate_dense/bias", 1, 0),
    ("feedforward_output_dense/kernel", 2, 0),
)

_BLOCK = re.compile(r"(?:^|/)block_(\d+)(?:/|$)")
_FIRST_STAGE = ("token_embedding", "position_embedding")
_LAST_STAGE = ("final_norm",)


def pipeline_stage(path: str, block_stage: Sequence[int]) -> int | None:
    """The stage holding the GPT variable at `path` (e.g. `gpt/block_3/.../kernel`):
    a block's stage, the embeddings on the first, the final LayerNorm on the last;
    None for a variable of no layer (dropout's `seed_generator/seed_generator_state`)."""
    match = _BLOCK.search(path)
    if match:
        return block_stage[int(match.group(1))]
    parts = path.split("/")
    if any(name in parts for name in _FIRST_STAGE):
        return 0
    if any(name in parts for name in _LAST_STAGE):
        return max(block_stage)
    return None


class TiedHead:
    """The GPT's final LayerNorm and tied head on the last stage, reading the
    embedding matrix through the one per-step copy (`table`).

    The same arithmetic as `GPT._logits` with `ReversibleEmbedding(reverse=True)`
    (the pipeline test compares gradients with the unsplit model's, so a change
    there fails loudly). Called like a model, so a task's `per_example_loss`
    computes its loss from the last stage's activations.
    """

    def __init__(self, model: keras.Model, table: tf.Tensor) -> None:
        self.model = model
        self.table = table

    def __call__(self, hidden: tf.Tensor, training: bool = False) -> tf.Tensor:
        del training  # LayerNorm and the matmul behave the same in both modes
        embedding = self.model.token_embedding
        if not embedding.tie_weights:
            raise RuntimeError("pipeline parallel: the GPT's head is expected to be tied")
        x = self.model.final_norm(hidden)
        kernel = ops.transpose(self.table)
        if embedding.reverse_dtype is not None:
            x = ops.cast(x, embedding.reverse_dtype)
            kernel = ops.cast(kernel, embedding.reverse_dtype)
        logits = ops.matmul(x, kernel)
        if embedding.logit_soft_cap is not None:
            cap = embedding.logit_soft_cap
            logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
        return tf.cast(logits, tf.float32)


def staged_per_example_loss(
    model: keras.Model,
    task,
    inputs: tf.Tensor,
    targets: tf.Tensor,
    *,
    devices: Sequence[str],
    block_stage: Sequence[int],
    num_microbatches: int,
    training: bool,
) -> tf.Tensor:
    """The task's per-example loss of the batch, computed as M staged micro-batches.

    Each micro-batch runs the embeddings on the first device, every block on
    its stage's device (`block_stage`), and the loss on the last, where the
    task sees `TiedHead` as its model; the tied head reads one copy of the
    embedding matrix per step. The result is the per-example losses of the
    whole batch in order, so the trainer's mean over the global batch is
    unchanged.
    """
    first, last = devices[0], devices[-1]
    m = num_microbatches
    with tf.device(last):
        # The tied head's one copy of the embedding matrix per step.
        table = tf.identity(
            tf.cast(model.token_embedding.embeddings, model.token_embedding.compute_dtype)
        )
        head = TiedHead(model, table)
        micro_targets = tf.split(targets, m) if m > 1 else [targets]
    with tf.device(first):
        micro_inputs = tf.split(inputs, m) if m > 1 else [inputs]
    losses = []
    for x, y in zip(micro_inputs, micro_targets, strict=True):
        with tf.device(first):
            hidden = model._embed(x, 0, training)  # noqa: SLF001 - the GPT's own stem
        for block, stage in zip(model.blocks, block_stage, strict=True):
            with tf.device(devices[stage]):
                hidden = block(hidden, training=training)
        with tf.device(last):
            losses.append(task.per_example_loss(head, hidden, y, training))
    with tf.device(last):
        return tf.concat(losses, axis=0) if m > 1 else losses[0]
