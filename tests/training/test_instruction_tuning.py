"""Instruction tuning (`config.data.response_field`): prompt/response pairs, formatted by
the model's chat template, loss on the response tokens only.

Rows are checked by decoding what they teach (the weighted targets must spell
the response and the turn's closing tokens, nothing of the prompt), the loss
against numpy on the model's own logits, and the command end to end on the
imported tiny Llama (ChatML template): tfllm-train learns two
answers, tfllm-evaluate reports response perplexity below the base model's,
and tfllm-generate --chat gives the taught answer and stops.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli

from tfllm.data.chat_format import render_exchange
from tfllm.data.instruction_data import (
    EncodedPairs,
    encode_pairs,
    length_sorted_batches,
    make_pairs_dataset,
)
from tfllm.data.tokenizer_kinds import chat_template, load_tokenizer
from tfllm.errors import ConfigError, DataError
from tfllm.evaluation.metrics import response_loss_and_perplexity
from tfllm.inference.loading import load_trained
from tfllm.pretrained.importer import import_checkpoint
from tfllm.training.tasks import InstructionTask

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained", "llama_tiny")
ANSWERS = {"sky": "blue", "grass": "green"}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("imported") / "llama")
    import_checkpoint(FIXTURE, workdir)
    return workdir


def pairs(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = ["the", "a", "what", "colour", "is", "tell", "me", "now", "please"]
    rows = []
    for i in range(n):
        thing = ("sky", "grass")[i % 2]
        filler = " ".join(rng.choice(words, rng.integers(1, 5)))
        rows.append({"prompt": f"{filler} {thing}?", "response": ANSWERS[thing]})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def taught(tokenizer, ids: np.ndarray, weights: np.ndarray) -> str:
    """The text a row teaches: its weighted targets, decoded."""
    return tokenizer.decode(ids[1:][weights > 0].tolist())


def test_rows_teach_the_response_and_the_turn_end_only(llama):
    tokenizer = load_tokenizer(os.path.join(llama, "tokenizer"))
    template = chat_template(os.path.join(llama, "tokenizer"))
    assert template and "<|im_start|>" in template
    prompts, responses = ["what colour is the sky?", "x"], ["blue", "a longer answer here"]
    encoded = encode_pairs(tokenizer, template, prompts, responses, 64, "test")
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        prompt_text, row_text = render_exchange(template, prompt, response)
        assert row_text == prompt_text + response + "<|im_end|>\n"
        row = encoded.ids[i][encoded.ids[i] != 0].tolist()
        assert row == tokenizer.encode(row_text)
        assert taught(tokenizer, encoded.ids[i], encoded.weights[i]) == response + "<|im_end|>\n"
    assert encoded.truncated == encoded.dropped == 0
    # Without a template: prompt, newline, response, then eos (SmolLM2's <|im_end|>).
    plain = encode_pairs(tokenizer, None, prompts, responses, 64, "test")
    eos = tokenizer.decode([tokenizer.eos_id])
    assert taught(tokenizer, plain.ids[0], plain.weights[0]) == "blue" + eos
    # A cut row keeps what fits of the response; a row with no response left is dropped.
    long_prompt = "word " * 10  # 31 tokens in this tiny vocabulary; "yes " * 30 is 61
    cut = encode_pairs(tokenizer, None, [long_prompt, "hi"], ["yes " * 30, "no"], 48, "test")
    assert (cut.truncated, cut.dropped, len(cut)) == (1, 0, 2)
    assert cut.weights[0].sum() > 0 and taught(tokenizer, cut.ids[0], cut.weights[0]) in (
        ("yes " * 30) + eos
    )
    gone = encode_pairs(tokenizer, None, [long_prompt * 2, "hi"], ["yes", "no"], 48, "test")
    assert (gone.dropped, len(gone)) == (1, 1)
    with pytest.raises(DataError, match="no pair has a response token"):
        encode_pairs(tokenizer, None, [long_prompt * 2], ["yes"], 48, "config.data.train_path")


def test_loss_is_the_mean_over_response_tokens(llama):
    trained = load_trained(llama)
    tokenizer, model = trained.tokenizer, trained.model
    template = chat_template(os.path.join(llama, "tokenizer"))
    rows = pairs(6, seed=0)
    encoded = encode_pairs(
        tokenizer, template, [r["prompt"] for r in rows], [r["response"] for r in rows], 40, "t"
    )
    task = InstructionTask(encoded, encoded)
    inputs, (targets, weights) = next(iter(make_pairs_dataset(encoded, 6, shuffle=False,
                                                              repeat=False)))  # fmt: skip
    loss = task.per_example_loss(model, inputs, (targets, weights), training=False).numpy()
    logits = model(inputs).numpy().astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets.numpy()[..., None], -1)[..., 0]
    w = weights.numpy()
    np.testing.assert_allclose(loss, (nll * w).sum(-1) / w.sum(-1), rtol=1e-5)
    whole = response_loss_and_perplexity(model, encoded, batch_size=4)
    np.testing.assert_allclose(whole["loss"], (nll * w).sum() / w.sum(), rtol=1e-5)
    assert whole["tokens"] == int(w.sum())
    first = response_loss_and_perplexity(model, encoded, batch_size=4, max_batches=1)
    np.testing.assert_allclose(first["loss"], (nll[:4] * w[:4]).sum() / w[:4].sum(), rtol=1e-5)


def test_length_sorted_batches_cover_every_row_once_and_keep_every_target():
    rng = np.random.default_rng(0)
    ends = rng.integers(1, 40, size=37)
    weights = np.zeros([37, 40], np.float32)
    for i, end in enumerate(ends):
        weights[i, rng.integers(0, end) : end] = 1.0
    ids = rng.integers(1, 100, size=[37, 41]).astype(np.int32)
    seen, previous = [], 0
    for index, batch_ids, batch_weights in length_sorted_batches(
        EncodedPairs(ids, weights, 0, 0), 8, multiple=16
    ):
        cut = batch_weights.shape[1]
        assert cut % 16 == 0 or cut == 40
        assert cut >= ends[index].max() >= previous  # sorted, nothing cut away
        previous = ends[index].max()
        np.testing.assert_array_equal(batch_ids, ids[index, : cut + 1])
        assert batch_weights.sum() == weights[index].sum()
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(37))


def test_train_evaluate_and_chat_on_pairs(llama, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(64, seed=1))
    dev = write_jsonl(tmp_path / "dev.jsonl", pairs(16, seed=2))
    workdir = str(tmp_path / "tuned")
    args = [
        f"--config={llama}/config.json", f"--config.train.init_from={llama}",
        f"--workdir={workdir}", f"--config.data.train_path={train}",
        f"--config.data.eval_path={dev}", "--config.data.format=jsonl",
        "--config.data.text_field=prompt", "--config.data.response_field=response",
        "--config.model.max_length=48", "--config.train.batch_size=16",
        "--config.train.num_steps=60", "--config.train.learning_rate=0.01",
        "--config.train.warmup_steps=0", "--config.train.steps_per_loop=20",
        "--config.train.eval_every=60", "--config.train.checkpoint_every=60",
        "--config.train.sample_tokens=0",
    ]  # fmt: skip
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Instruction data: 64 pairs" in proc.stdout and "chat template" in proc.stdout
    history = json.loads(open(os.path.join(workdir, "history.json")).read())["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history

    tokenizer = load_tokenizer(os.path.join(llama, "tokenizer"))
    template = chat_template(os.path.join(llama, "tokenizer"))
    rows = pairs(16, seed=2)
    encoded = encode_pairs(
        tokenizer, template, [r["prompt"] for r in rows], [r["response"] for r in rows], 48, "t"
    )
    before = response_loss_and_perplexity(load_trained(llama).model, encoded, 16)
    proc = run_cli("evaluate", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert after["eval_response_perplexity"] < 0.5 * before["perplexity"], (after, before)
    assert after["eval_response_tokens"] == encoded.response_tokens

    proc = run_cli(
        "generate", f"--workdir={workdir}", "--chat", "--prompt=tell me the sky?",
        "--max_new_tokens=6", "--sampler=greedy",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].strip() == "blue", proc.stdout


def test_bad_pair_configs_are_one_line(llama, tmp_path):
    from tfllm.config import base_config, validate

    config = base_config()
    config.data.response_field = "response"
    with pytest.raises(ConfigError, match="tsv, csv or jsonl file") as info:
        validate(config)
    assert "\n" not in str(info.value)
    config.data.update(train_path=str(tmp_path / "x.jsonl"), format="jsonl",
                       response_field="text")  # fmt: skip
    with pytest.raises(ConfigError, match="also the prompt's field"):
        validate(config)
    config.data.response_field = "response"
    config.model.name = "cnn_classifier"
    with pytest.raises(ConfigError, match="is a classifier"):
        validate(config)
