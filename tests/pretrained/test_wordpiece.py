"""The in-graph WordPiece tokenizer gives Hugging Face `tokenizers`' ids, exactly.

Compared on 400 seeded random strings (accents, uppercase, CJK, emoji,
control and format characters, every whitespace kind, ASCII and Unicode
punctuation, added tokens inside text, words over 100 characters, words not
in the vocabulary, random code points), eagerly, in `tf.function` and after a
SavedModel round trip; and one code point at a time over planes 0-2 and 14,
which checks the measured character tables of tfllm/data/wordpiece_tables.py
against the installed `tokenizers`.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.wordpiece import WordPieceTokenizer
from tfllm.errors import DataError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained", "bert_tiny")
PRETRAINED = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
MINILM = os.path.join(PRETRAINED, "minilm")

WORDS = (
    "the movie was great un ##able running hello world don't it's zzqxj qwertyuiop Xylophone "
    "naïve CAFÉ résumé Straße ΟΔΟΣ İstanbul ﬁne ＦＵＬＬ Привет مرحبا שלום नमस्ते こんにちは "
    "안녕하세요 中文 字符 play player playing"
).split()
PIECES = {
    "accents": ["e\u0301", "a\u0308", "n\u0303", "é", "Å", "o\u0302\u0323", "ẛ̣", "İ", "Å", "Ǆ"],
    "upper": ["ABC", "Hello", "ÀÉÎÕÜ", "ΣΑΣ", "ΆΈΉ", "ĲŒ", "ǅ"],
    "cjk": ["中", "文", "日本", "語", "\u3400", "\U00020000", "\uf900", "漢字", "カタカナ",
            "한국어"],
    "emoji": ["😀", "🥰", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤️", "🤖", "\U0001fae8", "☃"],
    "control": ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\u200b", "\u200d",
                "\u200e", "\ufeff", "\u00ad", "\ufffd", "\ue000", "\U000f0000", "\u2066"],
    "space": [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\xa0", "\u1680", "\u2000", "\u2007",
              "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\x1c", "\x1f"],
    # The last four: punctuation to RE2 but not to HF (newer), or to HF but not RE2 (recategorized).
    "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("¡¿«»—–…“”„‘’")
    + list("、。「」【】·§¶†‰⁂€£©®°±×÷™") + ["\u2e43", "\u2e5d", "\u166d", "\U000111c9"],
    "added": ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[mask]", "[MASK", "[[SEP]]"],
    "digits": ["0", "42", "3.14", "1,000", "٣", "१२"],
}  # fmt: skip


def random_strings(n: int, seed: int = 0) -> list[str]:
    """`n` seeded strings mixing every kind of character BERT's normalizer treats apart."""
    rng = random.Random(seed)
    kinds = sorted(PIECES)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßΣσ中"
    out = ["", " ", "x" * 100, "y" * 101, "é" * 100 + " " + "é" * 101, "ab" * 60 + "!"]
    while len(out) < n:
        parts = []
        for _ in range(rng.randint(0, 14)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(WORDS))
            elif r < 0.75:
                parts.append(rng.choice(PIECES[rng.choice(kinds)]))
            elif r < 0.85:
                parts.append("".join(rng.choice(letters) for _ in range(rng.randint(1, 12))))
            elif r < 0.9:  # long words, some over 100 characters
                parts.append("".join(rng.choice("abcxyz") for _ in range(4)) * rng.randint(5, 30))
            elif not 0xD800 <= (cp := rng.randrange(0x110000)) <= 0xDFFF:
                parts.append(chr(cp))
            if rng.random() < 0.6:
                parts.append(rng.choice([" ", " ", " ", "\n", "", "\u3000"]))
        out.append("".join(parts))
    return out


STRINGS = random_strings(400)


def _hf(path: str):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(path)
    hf.no_padding()
    hf.no_truncation()
    return hf


def _hf_ids(hf, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]


def _assert_same_ids(ours: list[list[int]], expected: list[list[int]], texts: list[str]) -> None:
    bad = [(t, a, b) for t, a, b in zip(texts, ours, expected, strict=True) if a != b]
    assert not bad, f"{len(bad)}/{len(texts)} differ, first: {bad[0]!r}"


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_hf_directory(FIXTURE)


def test_ids_equal_hf_eager_in_tf_function_and_after_savedmodel(tokenizer, tmp_path):
    hf = _hf(os.path.join(FIXTURE, "tokenizer.json"))
    expected = _hf_ids(hf, STRINGS)
    texts = tf.constant(STRINGS)
    _assert_same_ids(tokenizer.tokenize(texts).to_list(), expected, STRINGS)
    _assert_same_ids([tokenizer.encode(t) for t in STRINGS[:50]], expected[:50], STRINGS[:50])

    module = tf.Module()
    module.tokenizer = tokenizer
    module.tokenize = tf.function(
        lambda x: module.tokenizer.tokenize(x), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    _assert_same_ids(module.tokenize(texts).to_list(), expected, STRINGS)
    tf.saved_model.save(module, str(tmp_path / "saved"))
    import tensorflow_text  # noqa: F401  (registers the ops the reloaded graph needs)

    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    _assert_same_ids(reloaded.tokenize(texts).to_list(), expected, STRINGS)


SETTINGS = [
    dict(lowercase=False, strip_accents=False, clean_text=True, tokenize_chinese_chars=True),
    dict(lowercase=False, strip_accents=True, clean_text=True, tokenize_chinese_chars=False),
    dict(lowercase=True, strip_accents=False, clean_text=False, tokenize_chinese_chars=True),
]


def _hf_with(settings: dict, vocab: list[str]):
    """HF's BERT pipeline with these normalizer settings, built from the pieces."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, normalizers, pre_tokenizers

    hf = tokenizers.Tokenizer(
        models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
    )
    hf.normalizer = normalizers.BertNormalizer(
        clean_text=settings["clean_text"],
        handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"],
        lowercase=settings["lowercase"],
    )
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return hf


@pytest.mark.parametrize("settings", SETTINGS, ids=["cased", "cased_strip", "uncased_raw"])
def test_ids_equal_hf_under_other_normalizer_settings(tokenizer, settings):
    # Cased pieces too, so that case and accents decide ids, not only [UNK].
    vocab = tokenizer.vocab + ["Hello", "ABC", "É", "Σ", "##É", "CAFÉ", "Straße", "İ"]
    ours = WordPieceTokenizer(vocab, **settings)
    texts = [t for t in STRINGS if "\x00" not in t or settings["clean_text"]]
    _assert_same_ids(ours.tokenize(tf.constant(texts)).to_list(),
                     _hf_ids(_hf_with(settings, vocab), texts), texts)  # fmt: skip


def _explained(chars: list[str]) -> list[bool]:
    """Whether ICU (TensorFlow) and Rust (HF) disagree on the lowercase or NFD of each
    character: the documented difference, for Unicode 14+ letters no vocabulary holds."""
    import tensorflow_text as tf_text
    from tokenizers import normalizers

    lower = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True
    )
    nfd = normalizers.NFD()
    ours_lower = tf.strings.lower(tf.constant(chars), encoding="utf-8").numpy()
    ours_nfd = tf_text.normalize_utf8(tf.constant(chars), "NFD").numpy()
    return [
        a.decode() != lower.normalize_str(c) or b.decode() != nfd.normalize_str(c)
        for c, a, b in zip(chars, ours_lower, ours_nfd, strict=True)
    ]


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased_strip"])
def test_every_code_point_splits_and_normalizes_as_hf(tokenizer, lowercase):
    """One character between two letters, for every code point of planes 0-2 and 14."""
    pytest.importorskip("tokenizers")
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=lowercase
    )
    split = pre_tokenizers.BertPreTokenizer()
    ours = WordPieceTokenizer(tokenizer.vocab, lowercase=lowercase, strip_accents=True)
    points = [*range(0xD800), *range(0xE000, 0x30000), *range(0xE0000, 0xE1000)]
    texts = [f"x{chr(cp)}Y" for cp in points]
    words = ours.words(tf.constant(texts)).to_list()
    bad = []
    for text, got in zip(texts, words, strict=True):
        want = [w for w, _ in split.pre_tokenize_str(normalizer.normalize_str(text))]
        if [w.decode() for w in got] != want:
            bad.append(text[1])
    unexplained = [hex(ord(c)) for c, ok in zip(bad, _explained(bad), strict=True) if not ok]
    assert not unexplained, f"{len(unexplained)} code points differ from HF: {unexplained[:20]}"
    assert len(bad) < 150  # measured: 116 (uncased), 21 (cased), all Unicode 14+


def test_detokenize_equals_hf_decode(tokenizer):
    hf = _hf(os.path.join(FIXTURE, "tokenizer.json"))
    rng = random.Random(1)
    common = [tokenizer.vocab.index(t) for t in [".", ",", "?", "!", "'", "s", "t", "n", "##s"]]
    seqs = [
        [rng.choice(common) if rng.random() < 0.5 else rng.randrange(tokenizer.vocab_size)
         for _ in range(rng.randint(0, 16))]
        for _ in range(300)
    ] + [hf.encode(t).ids for t in STRINGS[:100]]  # fmt: skip
    ragged = tf.ragged.constant(seqs, dtype=tf.int32)
    for skip in (True, False):
        ours = [s.decode() for s in tokenizer.detokenize(ragged, skip).numpy()]
        expected = [hf.decode(s, skip_special_tokens=skip) for s in seqs]
        assert ours == expected
    assert tokenizer.decode(seqs[0]) == hf.decode(seqs[0])


def test_lowercase_ascii_text_round_trips(tokenizer):
    rng = random.Random(2)
    texts = []
    for _ in range(200):
        words = []
        for _ in range(rng.randint(1, 10)):
            word = "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))
            )
            words.append(word + rng.choice(["", "", "", ".", ",", "!", "?"]))
        texts.append(" ".join(words))
    decoded = tokenizer.detokenize(tokenizer.tokenize(tf.constant(texts))).numpy()
    assert [t.decode() for t in decoded] == texts
    assert tokenizer.decode(tokenizer.encode(texts[0])) == texts[0]


def test_encode_for_model_equals_hf_padding_and_truncation(tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(FIXTURE)
    texts = STRINGS[6:60]
    ids, mask = tokenizer.encode_for_model(texts, 16)
    batch = hf(texts, padding="max_length", truncation=True, max_length=16, return_tensors="np")
    np.testing.assert_array_equal(ids.numpy(), batch["input_ids"])
    np.testing.assert_array_equal(mask.numpy(), batch["attention_mask"] == 1)


def test_interface_and_special_ids(tokenizer):
    assert WordPieceTokenizer.TYPE == "wordpiece" == tokenizer.config()["type"]
    vocab = tokenizer.vocab
    assert tokenizer.vocab_size == len(vocab)
    assert (tokenizer.pad_id, tokenizer.unk_id) == (vocab.index("[PAD]"), vocab.index("[UNK]"))
    assert (tokenizer.bos_id, tokenizer.eos_id) == (tokenizer.cls_id, tokenizer.sep_id)
    assert (tokenizer.cls_id, tokenizer.sep_id) == (vocab.index("[CLS]"), vocab.index("[SEP]"))
    assert tokenizer.mask_id == vocab.index("[MASK]")
    assert tokenizer.tokenize("hello world").shape.rank == 1
    assert isinstance(tokenizer.tokenize(["a", "b c"]), tf.RaggedTensor)
    assert tokenizer.id_to_piece(tf.constant([tokenizer.cls_id])).numpy().tolist() == [b"[CLS]"]


def test_save_and_load_round_trip_and_integrity(tokenizer, tmp_path):
    directory = tmp_path / "tok"
    tokenizer.save(directory)
    assert sorted(os.listdir(directory)) == ["tokenizer.json", "vocab.txt"]
    loaded = WordPieceTokenizer.load(directory)
    assert loaded.config() == tokenizer.config()
    texts = tf.constant(STRINGS[:100])
    assert loaded.tokenize(texts).to_list() == tokenizer.tokenize(texts).to_list()

    vocab_path = directory / "vocab.txt"
    vocab_path.write_text(vocab_path.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    with pytest.raises(DataError, match="vocab.txt: corrupt vocabulary") as excinfo:
        WordPieceTokenizer.load(directory)
    assert "\n" not in str(excinfo.value)

    tokenizer.save(directory)
    config_path = directory / "tokenizer.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "type": "sentencepiece"}), encoding="utf-8")
    with pytest.raises(DataError, match="tokenizer.json: not a WordPiece tokenizer"):
        WordPieceTokenizer.load(directory)
    config_path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="tokenizer.json: corrupt tokenizer config"):
        WordPieceTokenizer.load(directory)
    tokenizer.save(directory)
    os.remove(vocab_path)
    with pytest.raises(DataError, match="tokenizer file missing: .*vocab.txt"):
        WordPieceTokenizer.load(directory)


def test_from_hf_directory_refuses_what_it_cannot_reproduce(tmp_path):
    with open(os.path.join(FIXTURE, "tokenizer.json"), encoding="utf-8") as f:
        fast = json.load(f)
    with open(os.path.join(FIXTURE, "vocab.txt"), encoding="utf-8") as f:
        (tmp_path / "vocab.txt").write_text(f.read(), encoding="utf-8")
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({**fast, "normalizer": {"type": "NFKC"}}), encoding="utf-8"
    )
    with pytest.raises(DataError, match="not a BERT WordPiece tokenizer"):
        WordPieceTokenizer.from_hf_directory(tmp_path)
    os.remove(tmp_path / "tokenizer.json")  # vocab.txt alone: transformers' defaults (uncased)
    alone = WordPieceTokenizer.from_hf_directory(tmp_path)
    assert alone.lowercase and alone.strip_accents
    os.remove(tmp_path / "vocab.txt")
    with pytest.raises(DataError, match="tokenizer file missing: .*vocab.txt"):
        WordPieceTokenizer.from_hf_directory(tmp_path)
    with pytest.raises(DataError, match="lacks the mask token"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])


@pytest.mark.pretrained
def test_minilm_tokenizer_equals_hf():
    if not os.path.isdir(MINILM):
        pytest.skip(f"{MINILM} is absent (../shared/tools/fetch-pretrained)")
    hf = _hf(os.path.join(MINILM, "tokenizer.json"))
    ours = WordPieceTokenizer.from_hf_directory(MINILM)
    texts = random_strings(400, seed=7)
    _assert_same_ids(ours.tokenize(tf.constant(texts)).to_list(), _hf_ids(hf, texts), texts)
