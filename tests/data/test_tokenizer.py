"""Tests for tfllm.data.tokenizer: exact round trips, in-graph use, save/load."""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf

from tfllm.data.corpus import bundled_paths, read_documents
from tfllm.data.tokenizer import Tokenizer
from tfllm.errors import DataError

VOCAB = 384  # 20 KB of Shakespeare needs >= 318 (256 bytes + specials + chars).
TRICKY = [
    "Hello, world!",
    " leading space",
    "trailing spaces   ",
    "\n",
    "\nstarts with a newline\n\nand ends with two\n\n",
    "tabs\tand\t\tmore  spaces",
    "accents: café, naïve, Ångström, Œuvre",
    "CJK 日本語の文章 and 中文",
    "emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
    "digits 1234567890 and ½ ∑ ∞",
    "Здравствуй, мир",
    "",
]


@pytest.fixture(scope="module")
def shakespeare_20k() -> str:
    return read_documents(bundled_paths("shakespeare")["train"], "text").texts[0][:20_000]


@pytest.fixture(scope="module")
def tokenizer(shakespeare_20k) -> Tokenizer:
    return Tokenizer.train([shakespeare_20k], vocab_size=VOCAB)


def test_vocab_and_special_ids(tokenizer):
    assert tokenizer.vocab_size == VOCAB
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    pieces = tokenizer.id_to_piece(tf.constant([0, 1, 2, 3])).numpy().tolist()
    assert pieces == [b"<pad>", b"<unk>", b"<s>", b"</s>"]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < VOCAB for i in ids)
    assert tokenizer.unk_id not in ids  # Byte fallback covers unseen characters.
    assert tokenizer.decode(ids) == text


def test_newline_is_one_token_and_spaces_are_kept(tokenizer):
    newline = tokenizer.encode("\n")
    assert len(newline) == 1
    ids = tokenizer.encode("a\nb")
    assert newline[0] in ids
    assert tokenizer.encode(" the") != tokenizer.encode("the")
    # Common English merges were learned: fewer tokens than bytes.
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert len(tokenizer.encode(text)) < len(text.encode()) * 0.8


def test_tokenize_in_tf_function_matches_eager(tokenizer):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = tokenizer.tokenize(texts)
        return ids, tokenizer.detokenize(ids)

    ids, back = round_trip(tf.constant(TRICKY))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == [tokenizer.encode(t) for t in TRICKY]
    assert [b.decode("utf-8") for b in back.numpy()] == TRICKY
    scalar = tokenizer.tokenize(tf.constant("café"))
    assert scalar.shape.rank == 1 and scalar.numpy().tolist() == tokenizer.encode("café")


def test_save_load_round_trip(tokenizer, tmp_path):
    target = tmp_path / "workdir" / "tokenizer"
    tokenizer.save(target)
    assert sorted(os.listdir(target)) == ["tokenizer.json", "tokenizer.model"]
    assert sorted(os.listdir(target.parent)) == ["tokenizer"]  # No temp dir left behind.
    config = json.loads((target / "tokenizer.json").read_text())
    assert config["type"] == "sentencepiece" and config["model_type"] == "bpe"
    assert config["vocab_size"] == VOCAB and config["eos_id"] == 3
    assert config["training"]["seed"] == 0
    assert (target / "tokenizer.model").read_bytes() == tokenizer.model_proto

    loaded = Tokenizer.load(target)
    assert loaded.vocab_size == VOCAB

    @tf.function
    def tok(texts):
        return loaded.tokenize(texts)

    assert tok(tf.constant(TRICKY)).to_list() == [tokenizer.encode(t) for t in TRICKY]
    assert loaded.decode(loaded.encode(TRICKY[8])) == TRICKY[8]
    tokenizer.save(target)  # Overwriting an existing tokenizer works.
    assert Tokenizer.load(target).model_proto == tokenizer.model_proto


def test_saved_model_round_trip(tokenizer, tmp_path):
    class Serve(tf.Module):
        def __init__(self, tok):
            super().__init__()
            self.tok = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            return self.tok.detokenize(self.tok.tokenize(texts))

    tf.saved_model.save(Serve(tokenizer), str(tmp_path / "sm"))
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    out = reloaded(tf.constant(TRICKY[:9]))
    assert [b.decode("utf-8") for b in out.numpy()] == TRICKY[:9]


def test_training_is_deterministic(shakespeare_20k, tokenizer):
    again = Tokenizer.train([shakespeare_20k], vocab_size=VOCAB)
    assert again.model_proto == tokenizer.model_proto
    unigram = Tokenizer.train([shakespeare_20k], vocab_size=VOCAB, model_type="unigram")
    assert unigram.decode(unigram.encode(TRICKY[7])) == TRICKY[7]


def test_vocab_size_errors(shakespeare_20k):
    with pytest.raises(DataError, match=r"too large for this corpus; use at most \d+") as e:
        Tokenizer.train([shakespeare_20k], vocab_size=50_000)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"too small for this corpus; it needs at least 318"):
        Tokenizer.train([shakespeare_20k], vocab_size=300)
    with pytest.raises(DataError, match="no text"):
        Tokenizer.train(["", "\n\n"], vocab_size=300)


def test_load_errors(tokenizer, tmp_path):
    with pytest.raises(DataError, match="tokenizer directory not found"):
        Tokenizer.load(tmp_path / "missing")
    target = tmp_path / "tok"
    tokenizer.save(target)
    (target / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt tokenizer config") as e:
        Tokenizer.load(target)
    assert str(target / "tokenizer.json") in str(e.value)
    tokenizer.save(target)
    data = bytearray((target / "tokenizer.model").read_bytes())
    data[100] ^= 0xFF
    (target / "tokenizer.model").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt tokenizer model"):
        Tokenizer.load(target)
    (target / "tokenizer.model").unlink()
    with pytest.raises(DataError, match="tokenizer file missing: .*tokenizer.model"):
        Tokenizer.load(target)
    with pytest.raises(DataError, match="not a valid SentencePiece model"):
        Tokenizer(b"garbage")
