"""Byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen2, ...) run inside the graph.

Token ids are those of Hugging Face `tokenizers` (`encode(text,
add_special_tokens=False)`), checked on hundreds of random Unicode strings in
the tests; tokenizing runs eagerly, in `tf.function`, in `tf.data` and in a
reloaded SavedModel (`import tensorflow_text` before loading), with only
TensorFlow / tensorflow-text ops. Steps, as in HF:

1. added tokens (all of them, special or not) are split out first, matched
   literally, leftmost-longest: first those matched on the raw text, then,
   after the normalizer (none or NFC), the `normalized` ones;
2. the pre-tokenizer stages (`byte_bpe_pretokenize`) cut the rest into words;
3. each word's bytes are byte-pair merged (`byte_bpe_merge`); with
   `ignore_merges` (Llama 3) a word that is itself in the vocabulary is taken
   whole.

`tokenize` never adds BOS / EOS: callers add them. `pad_id`, `unk_id`,
`bos_id` and `eos_id` are -1 where the model has no such token (a HF
`tokenizer.json` does not name BOS / EOS; they come from a sibling
`tokenizer_config.json` or the `*_token` arguments). `detokenize` turns every
id, added tokens included, into bytes as HF's ByteLevel decoder with
`skip_special_tokens=False` does: a piece spelled in the byte alphabet gives
its bytes, any other piece its UTF-8 text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.byte_bpe_import import (
    SPECIAL_NAMES,
    gguf_arguments,
    hf_arguments,
    hf_tokenizer_json,
    one_line,
    read_json,
    sibling_special_tokens,
)
from tfllm.data.byte_bpe_merge import byte_pair_merge, merge_table_entries
from tfllm.data.byte_bpe_pretokenize import (
    check_stages,
    interleave_rows,
    literal_pattern,
    pretokenize,
)
from tfllm.errors import DataError
from tfllm.utils.io import atomic_directory

CONFIG_FILE = "tokenizer.json"
DATA_FILE = "bpe.json"
DATA_FORMAT = 1
# Fewer byte pieces than this and the vocabulary is not byte-level (SmolLM2 lacks
# 21: bytes never or rarely seen in UTF-8 text, which are dropped as HF does).
MIN_BYTE_PIECES = 128


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the byte-level alphabet)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@dataclasses.dataclass
class _Spec:
    """Everything the data file holds (kept out of tf.Module's attribute tracking)."""

    vocab: dict[str, int]
    merges: list[list[str]]
    added_tokens: list[dict[str, Any]]
    pre_tokenizer: list[dict[str, Any]]
    normalizer: str | None
    ignore_merges: bool
    special_ids: dict[str, int]
    byte_unk_id: int
    fuse_unk: bool


class ByteBPETokenizer(tf.Module):
    """Byte-level BPE with Hugging Face's ids; same interface as `Tokenizer`."""

    TYPE = "byte_bpe"

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[Sequence[str]],
        added_tokens: Sequence[dict[str, Any]] = (),
        pre_tokenizer: Sequence[dict[str, Any]] = ({"type": "split", "pattern": "gpt2"},),
        normalizer: str | None = None,
        ignore_merges: bool = False,
        special_ids: dict[str, int] | None = None,
        byte_unk_id: int = -1,
        fuse_unk: bool = False,
    ):
        """vocab: piece (byte alphabet) -> id; merges: (left, right) pieces (or
        "left right") in rank order; added_tokens: {"id", "content", "normalized"};
        pre_tokenizer: stages (see byte_bpe_pretokenize); special_ids:
        pad/unk/bos/eos -> id or -1; byte_unk_id: the id a byte without a piece
        becomes (-1: it is dropped), fuse_unk: runs of those become one."""
        super().__init__(name="byte_bpe_tokenizer")
        if normalizer not in (None, "NFC"):
            raise DataError(f"unsupported normalizer {normalizer!r} (none or NFC)")
        spec = _Spec(
            vocab={str(k): int(v) for k, v in vocab.items()},
            merges=[[str(a), str(b)] for a, b in (_pair(m) for m in merges)],
            added_tokens=[_added(t) for t in added_tokens],
            pre_tokenizer=[dict(s) for s in check_stages(list(pre_tokenizer))],
            normalizer=normalizer,
            ignore_merges=bool(ignore_merges),
            special_ids={n: int((special_ids or {}).get(n, -1)) for n in SPECIAL_NAMES},
            byte_unk_id=int(byte_unk_id),
            fuse_unk=bool(fuse_unk),
        )
        self._spec = spec
        self._data_bytes: bytes | None = None
        pieces = {i: p for p, i in spec.vocab.items()}
        pieces.update({t["id"]: t["content"] for t in spec.added_tokens})
        if not pieces or min(pieces) < 0:
            raise DataError("vocabulary is empty or has negative ids")
        self._vocab_size = max(pieces) + 1
        for name, i in spec.special_ids.items():
            if not -1 <= i < self._vocab_size:
                raise DataError(f"{name}_id {i} is outside the vocabulary")
        alphabet = bytes_to_unicode()
        byte_ids = [spec.vocab.get(alphabet[b], spec.byte_unk_id) for b in range(256)]
        if sum(alphabet[b] in spec.vocab for b in range(256)) < MIN_BYTE_PIECES:
            raise DataError("vocabulary has too few byte pieces: not a byte-level BPE")
        self._byte_ids = tf.constant(byte_ids, tf.int32)
        self._fuse_id = spec.byte_unk_id if spec.fuse_unk else -1
        self._base = self._vocab_size
        keys, values = merge_table_entries(_merge_ids(spec), self._base)
        self._merges = _table(keys, values, tf.int64, tf.int64, np.iinfo(np.int64).max)
        ids = sorted(pieces)
        inverse = {c: b for b, c in alphabet.items()}
        texts = [pieces[i].encode("utf-8") for i in ids]
        self._pieces = _table(ids, texts, tf.int64, tf.string, b"")
        texts = [_piece_bytes(pieces[i], inverse) for i in ids]
        self._bytes = _table(ids, texts, tf.int64, tf.string, b"")
        self._vocab_bytes = None
        if spec.ignore_merges:  # keyed by the bytes a piece spells
            spelled = {_piece_bytes(p, inverse): i for p, i in spec.vocab.items()
                       if all(c in inverse for c in p)}  # fmt: skip
            self._vocab_bytes = _table(
                list(spelled), list(spelled.values()), tf.string, tf.int64, -1
            )
        groups = [
            {t["content"]: t["id"] for t in spec.added_tokens if t["normalized"] == normalized}
            for normalized in (False, True)
        ]
        self._literal_patterns = tuple(literal_pattern(list(g)) if g else "" for g in groups)
        self._literal_raw, self._literal_normalized = (
            _table([c.encode("utf-8") for c in g], list(g.values()), tf.string, tf.int64, -1)
            if g
            else None
            for g in groups
        )

    # -- constructors -------------------------------------------------------

    @classmethod
    def from_hf_tokenizer_json(
        cls,
        path: str | os.PathLike,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
    ) -> ByteBPETokenizer:
        """Reads a Hugging Face `tokenizer.json` (byte-level BPE only).

        BOS / EOS / PAD come from the arguments, else from `tokenizer_config.json`
        beside the file, else are -1; UNK is the model's `unk_token`.
        """
        path = os.fspath(path)
        data = read_json(path, "tokenizer.json")
        names = sibling_special_tokens(path)
        given = {"bos": bos_token, "eos": eos_token, "pad": pad_token}
        names.update({k: v for k, v in given.items() if v is not None})
        try:
            return cls(**hf_arguments(data, names))
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{path}: malformed tokenizer.json ({one_line(e)})") from None

    @classmethod
    def from_gguf_fields(
        cls,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int],
        pre: str,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        unk_id: int | None = None,
        model: str = "gpt2",
    ) -> ByteBPETokenizer:
        """From GGUF metadata: `tokenizer.ggml.tokens`, `.merges`, `.token_type`,
        `.pre` (llama.cpp's pre-tokenizer name), `.model` and the special ids.
        Control (3) and user-defined (4) tokens are the added tokens."""
        special = {"pad": pad_id, "unk": unk_id, "bos": bos_id, "eos": eos_id}
        return cls(**gguf_arguments(tokens, merges, token_types, pre, special, model))

    # -- the Tokenizer interface -------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Largest id + 1 (vocabulary and added tokens)."""
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return self._spec.special_ids["pad"]

    @property
    def unk_id(self) -> int:
        return self._spec.special_ids["unk"]

    @property
    def bos_id(self) -> int:
        return self._spec.special_ids["bos"]

    @property
    def eos_id(self) -> int:
        return self._spec.special_ids["eos"]

    @property
    def special_tokens(self) -> dict[str, int]:
        """Every added token (matched literally before pre-tokenizing) -> its id."""
        return {t["content"]: t["id"] for t in self._spec.added_tokens}

    def tokenize(self, texts: tf.Tensor | str | Sequence[str]) -> tf.Tensor | tf.RaggedTensor:
        """Strings -> ids: a scalar gives 1-D int32, a [N] vector a ragged [N, None]."""
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            return self._encode(tf.reshape(texts, [1])).values
        if texts.shape.rank not in (None, 1):
            raise ValueError(f"tokenize takes a scalar or a vector of strings, got {texts.shape}")
        return self._encode(texts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
        spec = self._spec
        tables = (self._literal_raw, self._literal_normalized)
        literals = list(zip(self._literal_patterns, tables, strict=True))
        words, ids = pretokenize(texts, literals, spec.normalizer, spec.pre_tokenizer)
        flat_words, flat_ids = words.values, ids.values
        if self._vocab_bytes is not None:
            flat_ids = tf.where(flat_ids < 0, self._vocab_bytes.lookup(flat_words), flat_ids)
        need = flat_ids < 0
        unique, index = tf.unique(tf.boolean_mask(flat_words, need))
        merged = byte_pair_merge(unique, self._byte_ids, self._merges, self._base, self._fuse_id)
        merged = tf.gather(merged, index)
        direct = tf.cast(tf.boolean_mask(flat_ids, tf.logical_not(need)), tf.int32)
        direct = tf.RaggedTensor.from_row_lengths(direct, tf.ones_like(direct, tf.int64))
        tokens = interleave_rows(need, merged, direct)
        return tf.RaggedTensor.from_row_splits(
            tokens.values, tf.gather(tokens.row_splits, words.row_splits), validate=False
        )

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids (1-D, dense 2-D or ragged int) -> byte strings (UTF-8 unless a
        multi-byte character was cut); added tokens give their text, unknown ids nothing."""
        return tf.strings.reduce_join(self._lookup(self._bytes, ids), axis=-1)

    def encode(self, text: str) -> list[int]:
        """Eager convenience: one string -> a list of ids."""
        return self.tokenize(tf.constant(text, tf.string)).numpy().tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """Eager convenience: ids -> string (a cut multi-byte char becomes U+FFFD)."""
        out = self.detokenize(tf.constant(list(ids), tf.int32, shape=[len(ids)]))
        return out.numpy().decode("utf-8", errors="replace")

    def id_to_piece(self, ids: tf.Tensor) -> tf.Tensor:
        """Ids -> their pieces as spelled in the vocabulary ("Ġthe"); "" if unknown."""
        return self._lookup(self._pieces, ids)

    @staticmethod
    def _lookup(table, ids):
        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(lambda v: table.lookup(tf.cast(v, tf.int64)), ids)
        return table.lookup(tf.cast(tf.convert_to_tensor(ids), tf.int64))

    # -- files ---------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        """What `bpe.json` holds: the constructor's arguments."""
        return {"format": DATA_FORMAT, **dataclasses.asdict(self._spec)}

    def _data_file_bytes(self) -> bytes:
        if self._data_bytes is None:
            text = json.dumps(self.data(), ensure_ascii=True, separators=(",", ":"))
            self._data_bytes = text.encode("ascii") + b"\n"
        return self._data_bytes

    def config(self) -> dict[str, Any]:
        """What `tokenizer.json` records: type, sizes, special ids, settings, data hash."""
        spec = self._spec
        return {
            "type": self.TYPE,
            "vocab_size": self.vocab_size,
            **{f"{name}_id": spec.special_ids[name] for name in SPECIAL_NAMES},
            "added_tokens": len(spec.added_tokens),
            "merges": len(spec.merges),
            "pre_tokenizer": [dict(s) for s in spec.pre_tokenizer],
            "normalizer": spec.normalizer,
            "ignore_merges": spec.ignore_merges,
            "data_file": DATA_FILE,
            "data_sha256": hashlib.sha256(self._data_file_bytes()).hexdigest(),
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Writes bpe.json and tokenizer.json; a kill never leaves a torn copy."""
        with atomic_directory(directory) as tmp:
            _write(os.path.join(tmp, DATA_FILE), self._data_file_bytes())
            config = json.dumps(self.config(), indent=2, sort_keys=True) + "\n"
            _write(os.path.join(tmp, CONFIG_FILE), config.encode("utf-8"))

    def save_hf(self, directory: str | os.PathLike) -> list[str]:
        """Writes Hugging Face's `tokenizer.json` (+ `tokenizer_config.json` naming the
        special tokens) into an existing directory, for `tfllm-export --format=hf`."""
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(hf_tokenizer_json(self.data()), f, ensure_ascii=False)
        pieces = {i: p for p, i in self._spec.vocab.items()}
        pieces.update({t["id"]: t["content"] for t in self._spec.added_tokens})
        names = {f"{n}_token": pieces[i] for n, i in self._spec.special_ids.items() if i >= 0}
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **names}, f, indent=2)
        return ["tokenizer.json", "tokenizer_config.json"]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ByteBPETokenizer:
        """Reads a directory written by `save`, checking that it is complete and intact."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise DataError(f"tokenizer directory not found: {directory}")
        config_path = os.path.join(directory, CONFIG_FILE)
        data_path = os.path.join(directory, DATA_FILE)
        for path in (config_path, data_path):
            if not os.path.isfile(path):
                raise DataError(f"tokenizer file missing: {path}")
        config = read_json(config_path, "tokenizer config")
        if config.get("type") != cls.TYPE:
            raise DataError(f"{config_path}: type is {config.get('type')!r}, not {cls.TYPE!r}")
        with open(data_path, "rb") as f:
            raw = f.read()
        if hashlib.sha256(raw).hexdigest() != config.get("data_sha256"):
            raise DataError(
                f"{data_path}: corrupt tokenizer data (sha256 does not match {CONFIG_FILE})"
            )
        data = read_json(data_path, "tokenizer data")
        if data.pop("format", None) != DATA_FORMAT:
            raise DataError(f"{data_path}: unknown tokenizer data format (expected {DATA_FORMAT})")
        try:
            tokenizer = cls(**data)
        except (DataError, TypeError, KeyError, ValueError, AttributeError) as e:
            raise DataError(f"{data_path}: bad tokenizer data ({one_line(e)})") from None
        if config.get("vocab_size") != tokenizer.vocab_size:
            raise DataError(
                f"{data_path}: vocab size {tokenizer.vocab_size} does not match "
                f"{CONFIG_FILE} ({config.get('vocab_size')})"
            )
        return tokenizer


def _pair(merge: Any) -> list[str]:
    parts = merge.split(" ") if isinstance(merge, str) else list(merge)
    if len(parts) != 2:
        raise DataError(f"merge {merge!r} is not a pair of pieces")
    return parts


def _added(token: dict[str, Any]) -> dict[str, Any]:
    content = token["content"]
    if not isinstance(content, str) or not content:
        raise DataError(f"added token {token!r} has no text")
    return {"id": int(token["id"]), "content": content, "normalized": bool(token.get("normalized"))}


def _merge_ids(spec: _Spec) -> list[tuple[int, int, int]]:
    """Merges as (left id, right id, new id); every piece must be in the vocabulary."""
    out = []
    for left, right in spec.merges:
        ids = [spec.vocab.get(p) for p in (left, right, left + right)]
        if None in ids:
            raise DataError(f"merge {left!r} {right!r} uses or makes a piece not in the vocabulary")
        out.append(tuple(ids))
    return out


def _piece_bytes(piece: str, inverse: dict[str, int]) -> bytes:
    if all(c in inverse for c in piece):
        return bytes(inverse[c] for c in piece)
    return piece.encode("utf-8")


def _table(keys, values, key_dtype, value_dtype, default) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, key_dtype, shape=[len(keys)]),
            tf.constant(values, value_dtype, shape=[len(values)]),
        ),
        default_value=tf.constant(default, value_dtype),
    )


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
