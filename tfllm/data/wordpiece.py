"""BERT's WordPiece tokenizer, run inside the graph, with Hugging Face's ids.

An imported BERT is only as good as its token ids, so this reproduces what
`tokenizers` (and so `transformers.BertTokenizerFast`) does, step by step,
with TensorFlow ops that run in `tf.data`, `tf.function` and a SavedModel:

1. added tokens ([CLS], [MASK], ...) are cut out of the raw text first and
   never normalized or split (HF's AddedVocabulary);
2. BertNormalizer: drop control/format/private-use characters, every
   whitespace becomes " ", spaces around CJK ideographs, then (NFD, drop
   non-spacing marks) when stripping accents, then lowercase, in that order;
3. BertPreTokenizer: split on whitespace, punctuation becomes its own word;
4. WordPiece: greedy longest match with "##" continuations
   (`tensorflow_text.FastWordpieceTokenizer`), a word over 100 characters or
   with an unmatched piece is one [UNK].

Why not `tf_text.BertTokenizer`: its lowercasing is NFKC case folding ("ß"
becomes "ss", "ﬁ" "fi"), its splitting and accent stripping use RE2's
Unicode tables, and its word limit counts bytes. HF's character classes come
from older tables than RE2's (about 100 newer punctuation marks and 400
newer marks differ), so they are measured from `tokenizers` into
`wordpiece_tables.py` instead of written as `\\p{P}` / `\\p{Mn}`.

Known difference: for characters of Unicode 14 and later, ICU (TensorFlow)
and Rust (HF) disagree on the lowercase of about 95 letters and the NFD of
about 20; ids differ only if the vocabulary holds such a character (no
published BERT vocabulary does: a word holding one is [UNK] either way).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tensorflow_text as tf_text

from tfllm.data import wordpiece_files as files
from tfllm.data import wordpiece_tables as tables
from tfllm.data.wordpiece_files import (
    CONFIG_FILE,
    DEFAULT_SPECIAL_TOKENS,
    PREFIX,
    SPECIAL_NAMES,
    VOCAB_FILE,
)
from tfllm.errors import DataError
from tfllm.utils.io import atomic_directory

# HF's per-token cleanup in its WordPiece decoder, applied in this order.
CLEANUP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
    (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


def char_class(table: str) -> str:
    """An RE2 character class from a table of hex code points and ranges."""
    items = []
    for item in table.split():
        start, _, end = item.partition("-")
        items.append(f"\\x{{{start}}}" + (f"-\\x{{{end}}}" if end else ""))
    return "[" + "".join(items) + "]"


REMOVED = char_class(tables.REMOVED)
SPACES = char_class(tables.SPACES)
ACCENTS = char_class(tables.ACCENTS)
CHINESE = char_class(tables.CHINESE)
PUNCTUATION = char_class(tables.PUNCTUATION)
SPLIT = f"{char_class(tables.SPLIT_SPACES)}+|{PUNCTUATION}"


class WordPieceTokenizer(tf.Module):
    """WordPiece with HF BERT's normalization; the interface of `tfllm.data.tokenizer.Tokenizer`.

    `tokenize` returns the text's pieces only, without [CLS]/[SEP] (as
    `Tokenizer.tokenize` adds no bos/eos); `encode_for_model` adds them,
    truncates and pads. `bos_id`/`eos_id` are [CLS]/[SEP].

    Args:
        vocab: the pieces, id = position (vocab.txt's lines).
        lowercase: lowercase after normalizing (HF `do_lower_case`).
        strip_accents: drop accents (NFD, then non-spacing marks); None follows
            `lowercase`, as HF does.
        tokenize_chinese_chars: every CJK ideograph is its own word.
        clean_text: drop control characters and turn every whitespace into " ".
        special_tokens: name ("pad", "unk", "cls", "sep", "mask") -> token.
        added_tokens: [(token, special)] matched in the raw text before
            normalizing (HF's added tokens); default: the special tokens.
        max_input_chars_per_word: a longer word is one [UNK].
    """

    TYPE = "wordpiece"

    def __init__(
        self,
        vocab: Sequence[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        clean_text: bool = True,
        special_tokens: dict[str, str] | None = None,
        added_tokens: Sequence[tuple[str, bool]] | None = None,
        max_input_chars_per_word: int = 100,
    ) -> None:
        super().__init__(name="wordpiece_tokenizer")
        self.vocab = [str(token) for token in vocab]
        self._index = {token: i for i, token in enumerate(self.vocab)}
        if not self.vocab or len(self._index) != len(self.vocab) or "" in self._index:
            raise DataError("WordPiece vocabulary is empty or has an empty or repeated token")
        self.special_tokens = {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}
        for name in SPECIAL_NAMES:
            if self.special_tokens[name] not in self._index:
                raise DataError(
                    f"WordPiece vocabulary lacks the {name} token {self.special_tokens[name]!r}"
                )
        if added_tokens is None:
            added_tokens = [(self.special_tokens[n], True) for n in SPECIAL_NAMES]
        self.added_tokens = [(str(t), bool(s)) for t, s in added_tokens]
        for token, _ in self.added_tokens:
            if token not in self._index:
                raise DataError(f"added token {token!r} is not in the WordPiece vocabulary")
        self.lowercase = bool(lowercase)
        self.strip_accents = lowercase if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.clean_text = bool(clean_text)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        # Longest first: RE2 takes the first alternative that matches, HF the longest.
        added = sorted({t for t, _ in self.added_tokens}, key=len, reverse=True)
        self._added_pattern = "|".join(re.escape(t) for t in added)
        skip = sorted(self._index[t] for t, special in self.added_tokens if special)
        self._skip_ids = tf.constant(skip or [-1], tf.int32)
        self._pieces = tf.constant(self.vocab, tf.string)
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocab,
            suffix_indicator=PREFIX,
            max_bytes_per_word=4 * self.max_input_chars_per_word,  # chars are checked below
            token_out_type=tf.int32,
            unknown_token=self.special_tokens["unk"],
            no_pretokenization=True,
        )

    # ------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _id(self, name: str) -> int:
        return self._index[self.special_tokens[name]]

    @property
    def pad_id(self) -> int:
        return self._id("pad")

    @property
    def unk_id(self) -> int:
        return self._id("unk")

    @property
    def cls_id(self) -> int:
        return self._id("cls")

    @property
    def sep_id(self) -> int:
        return self._id("sep")

    @property
    def mask_id(self) -> int:
        return self._id("mask")

    @property
    def bos_id(self) -> int:
        """[CLS]: what BERT puts first."""
        return self.cls_id

    @property
    def eos_id(self) -> int:
        """[SEP]: what BERT puts last."""
        return self.sep_id

    # ------------------------------------------------------------ tokenizing
    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        """HF's BertNormalizer on a string tensor, in its order of steps."""
        if self.clean_text:
            texts = tf.strings.regex_replace(texts, REMOVED, "")
            texts = tf.strings.regex_replace(texts, SPACES, " ")
        if self.tokenize_chinese_chars:
            texts = tf.strings.regex_replace(texts, f"({CHINESE})", r" \1 ")
        if self.strip_accents:
            texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), ACCENTS, "")
        if self.lowercase:
            # Rust lowercases one character at a time; ICU would make a final Σ "ς".
            texts = tf.strings.lower(tf.strings.regex_replace(texts, "Σ", "σ"), encoding="utf-8")
        return texts

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """[N] strings -> [N, (words)]: added tokens kept whole, the rest normalized and split.

        NUL becomes U+FFFD first (clean_text drops both): tensorflow_text's
        splitter and `tf.strings.lower` end a string at NUL.
        """
        texts = tf.strings.regex_replace(texts, r"\x{0}", "\ufffd")
        if not self._added_pattern:
            return tf_text.regex_split(self.normalize(texts), SPLIT, PUNCTUATION)
        segments = tf_text.regex_split(texts, self._added_pattern, self._added_pattern)
        flat = segments.flat_values
        added = tf.strings.regex_full_match(flat, self._added_pattern)
        split = tf_text.regex_split(self.normalize(flat), SPLIT, PUNCTUATION)
        split = tf.ragged.boolean_mask(
            split, split.with_flat_values(tf.gather(~added, split.value_rowids()))
        )
        whole = tf.ragged.boolean_mask(flat[:, tf.newaxis], added[:, tf.newaxis])
        per_segment = tf.concat([whole, split], axis=1)  # each row has one or the other
        return segments.with_flat_values(per_segment).merge_dims(1, 2)

    def tokenize(self, texts: tf.Tensor | str | Sequence[str]) -> tf.Tensor | tf.RaggedTensor:
        """Strings -> ids without [CLS]/[SEP]: a scalar gives 1-D int32, [N] a ragged [N, None]."""
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            return self.tokenize(texts[tf.newaxis])[0]
        words = self.words(texts)
        flat = words.flat_values
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > self.max_input_chars_per_word
        flat = tf.where(too_long, self.special_tokens["unk"], flat)
        pieces = self.wordpiece.tokenize(flat)
        return words.with_flat_values(pieces).merge_dims(1, 2)

    def encode_for_model(
        self, texts: tf.Tensor | Sequence[str], max_length: int
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """[N] strings -> ([CLS] ids [SEP] cut and padded to [N, max_length], padding mask).

        As HF's `tokenizer(texts, truncation=True, max_length=..., padding="max_length")`:
        the text's pieces are cut to `max_length - 2`, the mask is True on real tokens.
        """
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        ids = self.tokenize(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        ids = ids[:, : max_length - 2]
        n = ids.nrows()
        cls = tf.fill([n, 1], self.cls_id)
        sep = tf.fill([n, 1], self.sep_id)
        ids = tf.concat([cls, ids, sep], axis=1)
        mask = tf.sequence_mask(ids.row_lengths(), max_length)
        return ids.to_tensor(self.pad_id, shape=[None, max_length]), mask

    def detokenize(
        self, ids: tf.Tensor | tf.RaggedTensor, skip_special_tokens: bool = True
    ) -> tf.Tensor:
        """Ids (1-D, dense 2-D or ragged) -> strings, as HF's WordPiece decoder.

        "##" pieces join the previous one, others get a space, then HF's cleanup
        (" ," -> ","...). With `skip_special_tokens` (HF's default in
        `tokenizers`) the special tokens, [UNK] included, decode to nothing;
        ids outside the vocabulary always do.
        """
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank == 1:
                return self.detokenize(ids[tf.newaxis], skip_special_tokens)[0]
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.cast(ids, tf.int32)
        flat = ids.flat_values
        keep = (flat >= 0) & (flat < self.vocab_size)
        if skip_special_tokens:
            keep &= ~tf.reduce_any(flat[:, tf.newaxis] == self._skip_ids[tf.newaxis, :], axis=1)
        ids = tf.ragged.boolean_mask(ids, ids.with_flat_values(keep))
        pieces = tf.gather(self._pieces, ids.flat_values)
        position = tf.range(tf.shape(pieces)[0], dtype=tf.int64) - tf.gather(
            ids.row_starts(), ids.value_rowids()
        )
        continues = tf.strings.regex_full_match(pieces, re.escape(PREFIX) + ".*")
        stripped = tf.strings.regex_replace(pieces, "^" + re.escape(PREFIX), "", False)
        pieces = tf.where(
            position == 0, pieces, tf.where(continues, stripped, tf.strings.join([" ", pieces]))
        )
        for old, new in CLEANUP:
            pieces = tf.strings.regex_replace(pieces, re.escape(old), new)
        return tf.strings.reduce_join(ids.with_flat_values(pieces), axis=1)

    def encode(self, text: str) -> list[int]:
        """Eager convenience: one string -> a list of ids (no [CLS]/[SEP])."""
        return self.tokenize(tf.constant(text, tf.string)).numpy().tolist()

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Eager convenience: ids -> string."""
        out = self.detokenize(
            tf.constant(list(ids), tf.int32, shape=[len(ids)]), skip_special_tokens
        )
        return out.numpy().decode("utf-8", errors="replace")

    def id_to_piece(self, ids: tf.Tensor) -> tf.Tensor:
        """Ids -> their pieces as strings, for inspecting a vocabulary."""
        return tf.gather(self._pieces, ids)

    # ------------------------------------------------------------ files
    def vocab_bytes(self) -> bytes:
        """vocab.txt as written: one piece a line."""
        return ("\n".join(self.vocab) + "\n").encode("utf-8")

    def config(self) -> dict[str, Any]:
        """What our `tokenizer.json` records: type, sizes, special ids, normalizer settings."""
        return {
            "type": self.TYPE,
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "cls_id": self.cls_id,
            "sep_id": self.sep_id,
            "mask_id": self.mask_id,
            "special_tokens": dict(self.special_tokens),
            "added_tokens": [[t, s] for t, s in self.added_tokens],
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "clean_text": self.clean_text,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "vocab_sha256": hashlib.sha256(self.vocab_bytes()).hexdigest(),
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Writes vocab.txt and tokenizer.json; a kill never leaves a torn copy."""
        with atomic_directory(directory) as tmp:
            with open(os.path.join(tmp, VOCAB_FILE), "wb") as f:
                f.write(self.vocab_bytes())
                f.flush()
                os.fsync(f.fileno())
            with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
                json.dump(self.config(), f, indent=2, sort_keys=True, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())

    def save_hf(self, directory: str | os.PathLike) -> list[str]:
        """Writes the Hugging Face files (`vocab.txt`, `tokenizer_config.json`) for
        `tfllm-export --format=hf`, into an existing directory; returns their names."""
        with open(os.path.join(directory, VOCAB_FILE), "wb") as f:
            f.write(self.vocab_bytes())
        names = {"unk": "unk_token", "sep": "sep_token", "pad": "pad_token",
                 "cls": "cls_token", "mask": "mask_token"}  # fmt: skip
        settings = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            **{names[k]: v for k, v in self.special_tokens.items() if k in names},
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2, ensure_ascii=False)
        return [VOCAB_FILE, "tokenizer_config.json"]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> WordPieceTokenizer:
        """Reads a directory written by `save`, checking that it is complete and intact."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise DataError(f"tokenizer directory not found: {directory}")
        vocab_path = os.path.join(directory, VOCAB_FILE)
        config_path = os.path.join(directory, CONFIG_FILE)
        config = files.read_json(config_path)
        if config.get("type") != cls.TYPE:
            raise DataError(
                f"{config_path}: not a WordPiece tokenizer (type {config.get('type')!r})"
            )
        vocab, raw = files.read_vocab(vocab_path)
        if hashlib.sha256(raw).hexdigest() != config.get("vocab_sha256"):
            raise DataError(
                f"{vocab_path}: corrupt vocabulary (sha256 does not match {CONFIG_FILE})"
            )
        try:
            tokenizer = cls(
                vocab,
                lowercase=config["lowercase"],
                strip_accents=config["strip_accents"],
                tokenize_chinese_chars=config["tokenize_chinese_chars"],
                clean_text=config["clean_text"],
                special_tokens=config["special_tokens"],
                added_tokens=[tuple(t) for t in config["added_tokens"]],
                max_input_chars_per_word=config["max_input_chars_per_word"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{config_path}: corrupt tokenizer config (bad or missing {e})"
            ) from None
        except DataError as e:
            raise DataError(f"{vocab_path}: {e}") from None
        recorded = {k: config.get(k) for k in ("vocab_size", *(f"{n}_id" for n in SPECIAL_NAMES))}
        actual = {k: tokenizer.config()[k] for k in recorded}
        if recorded != actual:
            raise DataError(
                f"{config_path}: sizes/special ids {recorded} do not match {VOCAB_FILE}"
            )
        return tokenizer

    @classmethod
    def from_hf_directory(cls, directory: str | os.PathLike) -> WordPieceTokenizer:
        """A Hugging Face BERT tokenizer: vocab.txt, plus tokenizer_config.json and
        tokenizer.json where present (HF's fast tokenizer settings win, as in transformers)."""
        vocab, options = files.hf_settings(os.fspath(directory))
        try:
            return cls(vocab, **options)
        except DataError as e:
            raise DataError(f"{os.fspath(directory)}: {e}") from None
