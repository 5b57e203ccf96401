"""Left-padded batches with per-row settings give each row's one-at-a-time text.

The reference is `Generator.generate` on the prompt alone (its own cache, no
padding, one sampler), the loop `tfllm-generate` runs; the batched SavedModel
and the server decode with `tfllm.inference.row_decode`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from harness import build_model

from tfllm.config import SAMPLERS
from tfllm.inference.generate import Generator
from tfllm.inference.row_decode import RowDecoder, RowSettings, generate_rows, left_pad
from tfllm.models.gpt import GPT
from tfllm.models.llama import Llama

EOS = 3
GPT_TINY = dict(vocab_size=48, max_length=64, num_layers=2, num_heads=2, hidden_dim=32,
                intermediate_dim=64)  # fmt: skip
LLAMA_TINY = dict(vocab_size=48, max_length=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  hidden_dim=32, intermediate_dim=48, tie_embeddings=False)  # fmt: skip
# Rows of different lengths, samplers, budgets and seeds in one batch.
PROMPTS = [[5, 9, 11, 7, 20, 31, 8], [12], [40, 2, 17], [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6]]
ROWS = [  # sampler, temperature, top_k, top_p, seed, max_new_tokens
    ("greedy", 1.0, 0, 1.0, 0, 9),
    ("temperature", 0.8, 0, 1.0, 7, 12),
    ("top_k", 1.3, 5, 1.0, 11, 5),
    ("top_p", 1.0, 0, 0.7, 3, 12),
]


def _settings(rows) -> RowSettings:
    s, t, k, p, seed, n = zip(*rows, strict=True)
    return RowSettings.from_numpy([SAMPLERS.index(x) for x in s], t, k, p, seed, n)


def _alone(model, prompt, row) -> list[int]:
    sampler, temperature, top_k, top_p, seed, n = row
    ids = Generator(model, use_xla=False).generate(
        prompt, n, sampler, temperature, top_k, top_p, seed, eos_id=EOS
    )
    return ids.tolist()


def _cut(tokens: list[int], n: int) -> list[int]:
    tokens = tokens[:n]
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request):
    cls, kwargs = (GPT, GPT_TINY) if request.param == "gpt" else (Llama, LLAMA_TINY)
    return build_model(cls, kwargs, np.zeros([1, 8], np.int32), seed=4)


def test_left_pad_right_aligns_rows() -> None:
    ids, pad = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and pad.tolist() == [0, 2]


def test_batched_rows_equal_each_prompt_alone(model) -> None:
    ids, pad = left_pad(PROMPTS, EOS)
    out = tf.function(lambda i, p, *s: generate_rows(model, i, p, RowSettings(*s), EOS))(
        tf.constant(ids), tf.constant(pad), *_settings(ROWS).as_tuple()
    ).numpy()
    for i, (prompt, row) in enumerate(zip(PROMPTS, ROWS, strict=True)):
        expected = _cut(_alone(model, prompt, row), row[-1])
        assert _cut(out[i].tolist(), row[-1]) == expected, f"row {i} ({row[0]})"


def test_streamed_chunks_equal_each_prompt_alone(model) -> None:
    decoder = RowDecoder(model, EOS, chunk=3)  # budgets of 5, 9, 12: chunks end mid-row
    pieces = list(decoder.stream(PROMPTS, _settings(ROWS)))
    assert pieces[0].shape == (len(PROMPTS), 1)  # the first token comes alone, from the prefill
    streamed = np.concatenate(pieces, axis=1)
    for i, (prompt, row) in enumerate(zip(PROMPTS, ROWS, strict=True)):
        assert _cut(streamed[i].tolist(), row[-1]) == _cut(_alone(model, prompt, row), row[-1])


def test_padding_never_changes_a_rows_logits(model) -> None:
    """The prefill logits of a padded row equal its unpadded ones (tight tolerance)."""
    ids, pad = left_pad([[5, 9, 11], [7, 1, 2, 8, 30, 4]], EOS)
    cache = model.init_cache(2, 16)
    batched, _ = model.call_with_cache(tf.constant(ids), cache, 0, pad=tf.constant(pad))
    alone, _ = model.call_with_cache(tf.constant([[5, 9, 11]]), model.init_cache(1, 16), 0)
    np.testing.assert_allclose(batched[0, 3:].numpy(), alone[0].numpy(), atol=1e-5)
    assert np.isfinite(batched.numpy()).all()  # padding queries never make a NaN


def test_a_request_that_joins_a_running_batch_gets_its_own_text(model) -> None:
    """Continuous batching: row 1 finishes early and a new prompt takes it mid-way;
    the batch widens and another joins a new row."""
    decoder = RowDecoder(model, EOS, chunk=3)
    rows = [ROWS[1], ("greedy", 1.0, 0, 1.0, 0, 2)]  # row 1 is done after 2 tokens
    batch, first = decoder.start([PROMPTS[0], PROMPTS[2]], _settings(rows), 64)
    streamed = [[int(first[0])], [int(first[1])]]
    for _ in range(2):
        chunk = decoder.advance(batch)
        streamed[0] += chunk[0].tolist()
    assert batch.done[1] and batch.fits(len(PROMPTS[3]), ROWS[3][-1])
    joined = [decoder.join(batch, 1, PROMPTS[3], _settings([ROWS[3]]))]
    decoder.widen(batch, 4)  # more requests came: two more rows, idle until one joins
    late = [decoder.join(batch, 3, PROMPTS[1], _settings([ROWS[2]]))]
    while not batch.done.all():
        chunk = decoder.advance(batch)
        streamed[0] += chunk[0].tolist()
        joined += chunk[1].tolist()
        late += chunk[3].tolist()
    assert _cut(streamed[0], ROWS[1][-1]) == _cut(_alone(model, PROMPTS[0], ROWS[1]), ROWS[1][-1])
    assert _cut(joined, ROWS[3][-1]) == _cut(_alone(model, PROMPTS[3], ROWS[3]), ROWS[3][-1])
    assert _cut(late, ROWS[2][-1]) == _cut(_alone(model, PROMPTS[1], ROWS[2]), ROWS[2][-1])
