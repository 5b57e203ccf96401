"""Tests for tfllm.data.byte_bpe: ids identical to Hugging Face `tokenizers`
(the reference, a dev dependency), eagerly, in tf.function, in tf.data and in a
reloaded SavedModel; save/load; one-line errors for what is unsupported."""

from __future__ import annotations

import json
import os
import random

import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the regex ops a reloaded SavedModel runs)

from tfllm.data.byte_bpe import ByteBPETokenizer, bytes_to_unicode
from tfllm.data.byte_bpe_pretokenize import DIGIT, SPLIT_PATTERNS
from tfllm.data.corpus import bundled_paths, read_documents
from tfllm.errors import DataError

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<jupyter_script>", "<empty_output>", "<|tool_call|>",
]  # fmt: skip
SPACES = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028",
    "\u2029", "\u200a", "\x0b", "\x0c", "\x85", "\u1680", "\u202f", "\u205f", " \n ", "\t \n",
    "\x1c",
]  # fmt: skip
WORDS = [
    "the", "The", "king", "QUEEN", "thou", "art", "café", "naïve", "Ångström", "e\u0301te",
    "Œuvre", "Здравствуй", "мир", "日本語の文章", "中文", "한국어", "ſ", "straße", "ℌ",
    "\U000105c0\U000105c1",  # Unicode 16 letters RE2's tables lack
]  # fmt: skip
EMOJI = ["😀", "👍🏽", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "❤️", "🇫🇷"]
DIGITS = ["0", "7", "42", "123", "2024", "3.14", "1,000", "½", "²", "٣٤", "①", "\U00010d40"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'ſ", "'"]
PUNCT = list(',.!?()"`$%&@#<>|_-/\\{}、。«»') + ["...", "--"]
CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat's 2+2?  Answer in 10 words.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
LLAMA3_REGEX, QWEN2_REGEX = SPLIT_PATTERNS["llama3"][0], SPLIT_PATTERNS["qwen2"][0]
PRETRAINED = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
SMOLLM2_GGUF = os.path.join(PRETRAINED, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Glued fragments: whitespace of every kind, words, emoji, digits,
    contractions, punctuation and special tokens; some end in whitespace."""
    rng = random.Random(seed)
    kinds = [(0.3, SPACES), (0.55, WORDS), (0.62, EMOJI), (0.72, DIGITS), (0.8, CONTRACTIONS),
             (0.9, PUNCT), (1.0, SPECIALS)]  # fmt: skip
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 14)):
            draw = rng.random()
            parts.append(rng.choice(next(pool for limit, pool in kinds if draw < limit)))
        if rng.random() < 0.25:
            parts.append(rng.choice(SPACES))
        texts.append("".join(parts))
    return texts


TEXTS = random_texts(400)


@pytest.fixture(scope="module")
def hf_path(tmp_path_factory) -> str:
    """A byte-level BPE (vocab 1000, 18 specials) trained by HF on Tiny Shakespeare,
    pre-tokenized as SmolLM2 is: digits one by one, then GPT-2's regex."""
    text = read_documents(bundled_paths("shakespeare")["train"], "text").texts[0][:100_000]
    pre = tokenizers.pre_tokenizers
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = pre.Sequence(
        [pre.Digits(individual_digits=True), pre.ByteLevel(add_prefix_space=False)]
    )
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=SPECIALS,
        initial_alphabet=pre.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([text], trainer)
    path = str(tmp_path_factory.mktemp("hf") / "tokenizer.json")
    hf.save(path)
    return path


@pytest.fixture(scope="module")
def hf(hf_path):
    return tokenizers.Tokenizer.from_file(hf_path)


@pytest.fixture(scope="module")
def tokenizer(hf_path) -> ByteBPETokenizer:
    return ByteBPETokenizer.from_hf_tokenizer_json(hf_path)


def reference(hf, texts):
    return [hf.encode(t, add_special_tokens=False).ids for t in texts]


def test_interface(tokenizer, hf):
    assert tokenizer.TYPE == "byte_bpe" and tokenizer.config()["type"] == "byte_bpe"
    assert tokenizer.vocab_size == hf.get_vocab_size() == 1000
    assert tokenizer.special_tokens == {s: i for i, s in enumerate(SPECIALS)}
    # A bare tokenizer.json names no BOS/EOS/PAD and this model has no unk_token.
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (-1,) * 4
    ids = tf.constant([2, hf.token_to_id("Ġthe")])
    assert tokenizer.id_to_piece(ids).numpy().tolist() == [b"<|im_end|>", "Ġthe".encode()]


def test_special_tokens_do_not_collide(tokenizer, hf):
    """keras-hub's BytePairTokenizer turns `<|im_end|>` into `<repo_name>` + "E" with
    >= 11 special tokens; here each is one id, also glued to text."""
    for i, special in enumerate(SPECIALS):
        assert tokenizer.encode(special) == [i]
        assert tokenizer.encode(f"a{special}b") == reference(hf, [f"a{special}b"])[0]
    assert tokenizer.encode("<|im_end|>") == [2]


def test_matches_hf_eagerly_and_round_trips(tokenizer, hf):
    want = reference(hf, TEXTS)
    got = [tokenizer.encode(t) for t in TEXTS]
    assert sum(g == w for g, w in zip(got, want, strict=True)) == len(TEXTS)
    assert [tokenizer.decode(ids) for ids in got] == TEXTS
    assert tokenizer.decode(tokenizer.encode("é")[:1]) == "\ufffd"  # A cut character.
    assert tokenizer.encode("") == []


def test_matches_hf_in_tf_function_and_tf_data(tokenizer, hf):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = tokenizer.tokenize(texts)
        return ids, tokenizer.detokenize(ids)

    ids, back = round_trip(tf.constant(TEXTS))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == reference(hf, TEXTS)
    assert [b.decode("utf-8") for b in back.numpy()] == TEXTS
    scalar = tf.function(tokenizer.tokenize)(tf.constant(TEXTS[0]))
    assert scalar.shape.rank == 1 and scalar.numpy().tolist() == reference(hf, TEXTS[:1])[0]
    dataset = tf.data.Dataset.from_tensor_slices(TEXTS).batch(64).map(tokenizer.tokenize)
    assert [row for batch in dataset for row in batch.to_list()] == reference(hf, TEXTS)


def test_matches_hf_after_saved_model_reload(tokenizer, hf, tmp_path):
    class Serve(tf.Module):
        def __init__(self, tok):
            super().__init__()
            self.tok = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            ids = self.tok.tokenize(texts)
            return {"ids": ids.values, "splits": ids.row_splits, "text": self.tok.detokenize(ids)}

    tf.saved_model.save(Serve(tokenizer), str(tmp_path / "sm"))
    out = tf.saved_model.load(str(tmp_path / "sm"))(tf.constant(TEXTS))
    ids = tf.RaggedTensor.from_row_splits(out["ids"], out["splits"])
    assert ids.to_list() == reference(hf, TEXTS)
    assert [b.decode("utf-8") for b in out["text"].numpy()] == TEXTS


def _variant(hf_path, tmp_path, name, pre_tokenizer, **changes):
    data = json.loads(open(hf_path, encoding="utf-8").read())
    data["pre_tokenizer"] = pre_tokenizer
    for key, value in changes.items():
        if key == "ignore_merges":
            data["model"]["ignore_merges"] = value
        elif key == "added_tokens":
            data["added_tokens"] += value
        else:
            data[key] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return tokenizers.Tokenizer.from_file(str(path)), ByteBPETokenizer.from_hf_tokenizer_json(path)


def _byte_level(add_prefix_space=False, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
            "use_regex": use_regex}  # fmt: skip


def _split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _added(content, token_id, special=False, normalized=True):
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": normalized, "special": special}  # fmt: skip


VARIANTS = {
    "gpt2": (_byte_level(), {}),
    "gpt2_prefix_space": (_byte_level(add_prefix_space=True), {}),
    "grouped_digits": (
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": False},
                _byte_level(add_prefix_space=True),
            ],
        },
        {},
    ),
    "llama3": (
        {"type": "Sequence", "pretokenizers": [_split(LLAMA3_REGEX), _byte_level(use_regex=False)]},
        {"ignore_merges": True},
    ),
    "qwen2_nfc": (
        {"type": "Sequence", "pretokenizers": [_split(QWEN2_REGEX), _byte_level(use_regex=False)]},
        {
            "normalizer": {"type": "NFC"},
            "added_tokens": [
                _added("Ångström", 1000),
                _added("king", 1001),
                _added("kingdom<|im_end|>", 1002, special=True, normalized=False),
            ],
        },
    ),
    "no_split": (_byte_level(use_regex=False), {}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_pre_tokenizers_match_hf(hf_path, tmp_path, name):
    pre_tokenizer, changes = VARIANTS[name]
    hf, ours = _variant(hf_path, tmp_path, name, pre_tokenizer, **changes)
    texts = TEXTS + ["kingdom<|im_end|> king Ångström A\u030angström"]
    want = [hf.encode(t, add_special_tokens=False).ids for t in texts]
    got = ours.tokenize(tf.constant(texts)).to_list()
    assert sum(g == w for g, w in zip(got, want, strict=True)) == len(texts)
    assert [ours.decode(g) for g in got] == [hf.decode(w, skip_special_tokens=False) for w in want]


@pytest.mark.parametrize("seed", range(4))
def test_merge_order_matches_hf_for_any_merge_list(seed, tmp_path):
    """Merges in random order (a token's merge may come after merges that use it)
    and duplicates making the same piece: still HF's lowest-rank-leftmost order."""
    rng = random.Random(seed)
    alphabet = list(bytes_to_unicode().values())
    vocab, merges, pieces = {c: i for i, c in enumerate(alphabet)}, [], ["a", "b", "c"]
    while len(merges) < 40:
        left, right = rng.choice(pieces), rng.choice(pieces)
        if len(left + right) <= 8 and (left, right) not in merges:
            merges.append((left, right))
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                pieces.append(left + right)
    rng.shuffle(merges)
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.save(str(tmp_path / "t.json"))
    ours = ByteBPETokenizer.from_hf_tokenizer_json(tmp_path / "t.json")
    words = ["".join(rng.choices("abc", k=rng.randint(1, 40))) for _ in range(300)]
    assert ours.tokenize(tf.constant(words)).to_list() == reference(hf, words)


@pytest.mark.parametrize("unk", [None, "<unk>"])
def test_bytes_missing_from_the_vocabulary(unk, tmp_path):
    """SmolLM2 lacks 21 byte pieces: HF drops such bytes, or gives unk_token (fused)."""
    alphabet = bytes_to_unicode()
    dropped = {ord("\x04"), ord("z"), 0xF1}
    vocab = {c: i for i, c in enumerate(c for b, c in alphabet.items() if b not in dropped)}
    vocab["<unk>"] = len(vocab)
    model = tokenizers.models.BPE(vocab, [], unk_token=unk, fuse_unk=True)
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.save(str(tmp_path / "t.json"))
    ours = ByteBPETokenizer.from_hf_tokenizer_json(tmp_path / "t.json")
    texts = ["a\x04b", "zz top", "\U00040000 z", "fizz\x04z"]
    assert ours.tokenize(tf.constant(texts)).to_list() == reference(hf, texts)


def test_bos_eos_from_tokenizer_config(hf_path, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(open(hf_path, "rb").read())
    config = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = ByteBPETokenizer.from_hf_tokenizer_json(
        tmp_path / "tokenizer.json", pad_token="<|endoftext|>"
    )
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 0, -1)


def test_save_load_round_trip(tokenizer, hf, tmp_path):
    target = tmp_path / "workdir" / "tokenizer"
    tokenizer.save(target)
    assert sorted(os.listdir(target)) == ["bpe.json", "tokenizer.json"]
    assert sorted(os.listdir(target.parent)) == ["tokenizer"]  # No temp dir left behind.
    config = json.loads((target / "tokenizer.json").read_text())
    assert config["type"] == "byte_bpe" and config["vocab_size"] == 1000
    assert config == tokenizer.config()
    loaded = ByteBPETokenizer.load(target)
    assert loaded.tokenize(tf.constant(TEXTS[:50])).to_list() == reference(hf, TEXTS[:50])
    assert loaded.special_tokens == tokenizer.special_tokens
    tokenizer.save(target)  # Overwriting works.


def test_load_rejects_damaged_directories(tokenizer, tmp_path):
    target = tmp_path / "tok"
    with pytest.raises(DataError, match="tokenizer directory not found"):
        ByteBPETokenizer.load(target)
    tokenizer.save(target)
    data = (target / "bpe.json").read_bytes()
    (target / "bpe.json").write_bytes(data.replace(b'"\\u0120t"', b'"\\u0120x"', 1))
    with pytest.raises(DataError, match="corrupt tokenizer data") as e:
        ByteBPETokenizer.load(target)
    assert str(target / "bpe.json") in str(e.value) and "\n" not in str(e.value)
    (target / "bpe.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"bpe\.json: corrupt tokenizer data"):
        ByteBPETokenizer.load(target)
    tokenizer.save(target)
    config = (target / "tokenizer.json").read_text()
    (target / "tokenizer.json").write_text(config[: len(config) // 2])
    with pytest.raises(DataError, match=r"tokenizer\.json: corrupt tokenizer config"):
        ByteBPETokenizer.load(target)
    (target / "tokenizer.json").write_text(config.replace('"byte_bpe"', '"sentencepiece"'))
    with pytest.raises(DataError, match=r"tokenizer\.json: type is 'sentencepiece'"):
        ByteBPETokenizer.load(target)
    (target / "tokenizer.json").unlink()
    with pytest.raises(DataError, match=r"tokenizer file missing: .*tokenizer\.json"):
        ByteBPETokenizer.load(target)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["model"].update(type="WordPiece"), "unsupported model type 'WordPiece'"),
        (
            lambda d: d.update(normalizer={"type": "Lowercase"}),
            "unsupported normalizer 'Lowercase'",
        ),
        (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer: Whitespace"),
        (lambda d: d.update(pre_tokenizer=_split(r"\s+")), "pre_tokenizer: Split pattern"),
        (lambda d: d.update(pre_tokenizer=None), "pre_tokenizer: none"),
        (lambda d: d.update(decoder={"type": "Metaspace"}), "unsupported decoder 'Metaspace'"),
        (lambda d: d["model"].update(dropout=0.1), "unsupported BPE option dropout"),
        (lambda d: d["added_tokens"][0].update(lstrip=True), "added token option lstrip"),
        (lambda d: d["model"]["merges"].append("Ġ qqq"), "not in the vocabulary"),
    ],
)
def test_unsupported_hf_components_are_named(hf_path, tmp_path, change, message):
    data = json.loads(open(hf_path, encoding="utf-8").read())
    change(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as e:
        ByteBPETokenizer.from_hf_tokenizer_json(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_unsupported_gguf_fields_are_named():
    tokens = list(bytes_to_unicode().values())
    with pytest.raises(DataError, match="unsupported tokenizer.ggml.pre 'default'"):
        ByteBPETokenizer.from_gguf_fields(tokens, [], [1] * len(tokens), "default")
    with pytest.raises(DataError, match="unsupported tokenizer.ggml.model 'llama'"):
        ByteBPETokenizer.from_gguf_fields(tokens, [], [1] * len(tokens), "gpt2", model="llama")


def _read_gguf_tokenizer(gguf, path: str) -> dict:
    """The from_gguf_fields arguments; string arrays are `parts[i] for i in data`."""
    fields = gguf.GGUFReader(path).fields

    def strings(key):
        field = fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def number(key):
        field = fields.get(key)
        return None if field is None else int(field.parts[field.data[0]][0])

    token_type = fields["tokenizer.ggml.token_type"]
    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "token_types": [int(token_type.parts[i][0]) for i in token_type.data],
        "pre": strings("tokenizer.ggml.pre")[0],
        "model": strings("tokenizer.ggml.model")[0],
        **{f"{name}_id": number(f"tokenizer.ggml.{key}_token_id")
           for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"),
                             ("unk", "unknown"))},
    }  # fmt: skip


@pytest.mark.pretrained
@pytest.mark.skipif(not os.path.isfile(SMOLLM2_GGUF), reason=f"no {SMOLLM2_GGUF}")
def test_smollm2_gguf_matches_hf():
    """SmolLM2's tokenizer (GGUF `pre` = "smollm": digits one by one, then GPT-2's
    regex) against HF's. transformers' GGUF loader ignores `pre` and splits with
    GPT-2's regex alone, so it differs from the model's own tokenizer.json
    (and from llama.cpp) on some text with numbers; the reference is that
    loader's vocabulary with SmolLM2's published pre-tokenizer."""
    gguf = pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    ours = ByteBPETokenizer.from_gguf_fields(**_read_gguf_tokenizer(gguf, SMOLLM2_GGUF))
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id) == (49152, 1, 2, 2)
    hf = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(SMOLLM2_GGUF), gguf_file=os.path.basename(SMOLLM2_GGUF)
    )
    texts = TEXTS + [CHATML]
    as_loaded = [hf.encode(t, add_special_tokens=False) for t in texts]
    pre = tokenizers.pre_tokenizers
    backend = hf.backend_tokenizer
    backend.pre_tokenizer = pre.Sequence(
        [pre.Digits(individual_digits=True), pre.ByteLevel(add_prefix_space=False)]
    )
    want = reference(backend, texts)
    got = ours.tokenize(tf.constant(texts)).to_list()
    assert sum(g == w for g, w in zip(got, want, strict=True)) == len(texts)
    numbers = tf.strings.regex_full_match(texts, f"(?s).*[{DIGIT}].*").numpy()
    for text, mine, loaded, has_number in zip(texts, got, as_loaded, numbers, strict=True):
        assert mine == loaded or has_number, text
    assert got[-1][:3] == [1, 9690, 198] and got[-1].count(2) == 2  # <|im_start|>system\n
    assert [ours.decode(g) for g in got] == texts
