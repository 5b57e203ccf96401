"""Prompt/response pairs for instruction tuning: formatted as the model will be prompted,
with the loss on the response tokens only.

Each pair becomes one row. With the model's chat template (an imported
instruct model's `tokenizer/chat_template.jinja`), the row is the rendered
exchange — system/user turn, then the assistant's answer and the token that
closes a turn (`<|im_end|>` for SmolLM2), so the tuned model learns where to
stop — exactly what `tfllm-generate --chat` will feed it. Without a template
(a tfllm GPT, a base model) the row is `prompt + "\\n" + response` followed by
the tokenizer's eos (where it has one).

Only response tokens are learned: the prompt is the user's, and learning it
would spend capacity on predicting questions (Ouyang et al. 2022; the
"completion only" loss of TRL and Alpaca). The boundary is found as Alpaca's
training code does: the prompt is tokenized alone and its length marks where
the answer starts in the tokenized exchange (checked to be a prefix of it).

Rows are right-padded with id 0 to `max_length + 1` tokens (static shapes: one
XLA program for every batch) and cut there; `weights[t]` is 1 where target `t`
(token `t + 1`) is a response token. A pair whose response is cut away
entirely teaches nothing and is dropped with a count.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from tfllm.data.chat_format import ChatTemplateError, render_exchange
from tfllm.data.classification_data import LabelledSplits, load_labelled_splits
from tfllm.data.tokenizer_kinds import AnyTokenizer
from tfllm.errors import DataError


@dataclasses.dataclass
class EncodedPairs:
    """Rows of a split: ids int32 `[N, max_length + 1]` (0-padded) and float32
    `weights [N, max_length]` (1 on response targets)."""

    ids: np.ndarray
    weights: np.ndarray
    truncated: int  # rows cut at max_length + 1 tokens (some response kept)
    dropped: int  # pairs whose response lay entirely past the cut

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def response_tokens(self) -> int:
        return int(self.weights.sum())


def format_pair(template: str | None, prompt: str, response: str) -> tuple[str, str]:
    """(prompt text, whole row text) of one pair: the chat template's, or `prompt\\n`
    and `prompt\\nresponse` without one."""
    if template is None:
        return prompt + "\n", prompt + "\n" + response
    return render_exchange(template, prompt, response)


def encode_pairs(
    tokenizer: AnyTokenizer,
    template: str | None,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    what: str,
    sources: list[str] | None = None,
    chunk: int = 2048,
) -> EncodedPairs:
    """Tokenizes the pairs (in chunks, in the graph tokenizer) into padded rows and
    response weights. A template that fails on a pair: DataError naming `what`
    and the pair's source line."""
    sources = sources or [f"row {i + 1}" for i in range(len(prompts))]
    width = max_length + 1
    eos = [int(tokenizer.eos_id)] if template is None and tokenizer.eos_id >= 0 else []
    rows, starts, truncated, dropped = [], [], 0, 0
    for begin in range(0, len(prompts), chunk):
        prompt_texts, row_texts = [], []
        for i in range(begin, min(begin + chunk, len(prompts))):
            try:
                prompt_text, row_text = format_pair(template, prompts[i], responses[i])
            except ChatTemplateError as e:
                raise DataError(f"{what}: {sources[i]}: {e}") from None
            prompt_texts.append(prompt_text)
            row_texts.append(row_text)
        prompt_ids = tokenizer.tokenize(tf.constant(prompt_texts)).to_list()
        row_ids = tokenizer.tokenize(tf.constant(row_texts)).to_list()
        for head, row in zip(prompt_ids, row_ids, strict=True):
            row = list(row) + eos
            start = len(head) if row[: len(head)] == list(head) else _common_prefix(head, row)
            if start >= min(len(row), width):  # no response token survives the cut
                dropped += 1
                continue
            truncated += len(row) > width
            rows.append(row[:width])
            starts.append(start)
    if not rows:
        raise DataError(
            f"{what}: no pair has a response token within max_length={max_length} "
            f"({dropped} dropped: prompts too long)"
        )
    ids = np.zeros([len(rows), width], np.int32)
    weights = np.zeros([len(rows), max_length], np.float32)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = row
        # Target t is token t + 1: a response token when t + 1 >= start.
        weights[i, max(start - 1, 0) : len(row) - 1] = 1.0
    return EncodedPairs(ids, weights, truncated, dropped)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Where a prompt tokenized alone stops agreeing with the tokenized row (a merge
    across the boundary): the answer is taken to start there."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def make_pairs_dataset(
    pairs: EncodedPairs,
    batch_size: int,
    *,
    shuffle: bool,
    repeat: bool,
    seed: int = 0,
    drop_remainder: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs int32 `[b, T]`, (targets int32 `[b, T]`, weights float32 `[b, T]`)).

    With `input_context`, pipeline i keeps every n-th row and `batch_size` is
    the per-replica batch.
    """
    shards = input_context.num_input_pipelines if input_context else 1
    if len(pairs) // shards < batch_size and drop_remainder:
        raise DataError(
            f"training split too small: {len(pairs)} pairs, need at least {batch_size * shards} "
            f"for one batch of {batch_size}"
        )
    dataset = tf.data.Dataset.from_tensor_slices((pairs.ids, pairs.weights))
    if input_context is not None and shards > 1:
        dataset = dataset.shard(shards, input_context.input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(
            min(len(pairs), 100_000), seed=seed, reshuffle_each_iteration=True
        )
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda ids, w: (ids[:, :-1], (ids[:, 1:], w)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def length_sorted_batches(
    pairs: EncodedPairs, batch_size: int, multiple: int = 16
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(row indices, ids `[b, w + 1]`, weights `[b, w]`) for scoring, not training: rows
    sorted by length, each batch cut after its longest row's last response target
    (w rounded up to `multiple`, so a traced model sees a few shapes, not one per
    batch). A causal model's loss at a position ignores everything after it, so the
    cut changes no number; it spares the padding that fills most of `max_length`.
    """
    width = pairs.weights.shape[1]
    # Position after each row's last response target (rows have at least one).
    ends = width - np.argmax(pairs.weights[:, ::-1] > 0, axis=1)
    order = np.argsort(ends, kind="stable")
    for start in range(0, len(pairs), batch_size):
        index = order[start : start + batch_size]
        cut = min(-(-int(ends[index].max()) // multiple) * multiple, width)
        yield index, pairs.ids[index, : cut + 1], pairs.weights[index, :cut]


def load_pair_splits(data: ml_collections.ConfigDict) -> LabelledSplits:
    """Prompt/response rows of train and eval (a file, or `eval_fraction` of the training
    rows held out): `texts` are the prompts (`text_field`), `labels` the responses
    (`response_field`), each a stripped string, bad rows handled as for classifiers."""
    as_labels = copy.deepcopy(data)
    as_labels.label_field = data.response_field
    as_labels.test_path = ""
    return load_labelled_splits(as_labels)
