"""A SentencePiece tokenizer learned from the user's corpus, run inside the graph.

Training uses the `sentencepiece` package (fast, in memory); tokenizing uses
`tensorflow_text.SentencepieceTokenizer`, so the same model proto runs in
`tf.data`, in `tf.function`, and inside an exported SavedModel that takes raw
strings. The settings below make the round trip exact for any Unicode text:
identity normalization, no dummy prefix, whitespace kept as-is, byte fallback
for characters never seen in training, and "\\n" as its own token.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text

from tfllm.config import TOKENIZER_MODEL_TYPES
from tfllm.errors import DataError
from tfllm.utils.io import atomic_directory
from tfllm.utils.native_stderr import filtered_native_stderr

MODEL_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer.json"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Lines fed to the trainer; more adds little to a BPE vocabulary but costs time.
MAX_TRAINING_LINES = 200_000


class Tokenizer(tf.Module):
    """SentencePiece (BPE or unigram) with fixed special ids pad=0 unk=1 bos=2 eos=3.

    Trap: `tf.random.set_seed` (and so `keras.utils.set_random_seed`) called
    *after* a `Tokenizer` is built destroys the underlying SentencepieceOp
    resource; every later `tokenize` then fails with "Resource ... does not
    exist". Seed first, then build or load tokenizers.

    When exporting, track the tokenizer (`keras.export.ExportArchive.track`)
    so its resource is saved, and `import tensorflow_text` before loading.
    """

    def __init__(self, model_proto: bytes, settings: dict[str, Any] | None = None):
        """Builds the in-graph tokenizer from a serialized SentencePiece model."""
        super().__init__(name="tokenizer")
        try:
            processor = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, TypeError) as e:
            raise DataError(f"not a valid SentencePiece model ({_one_line(e)})") from None
        self._model_proto = bytes(model_proto)
        self._vocab_size = int(processor.get_piece_size())
        self._ids = {
            "pad": int(processor.pad_id()),
            "unk": int(processor.unk_id()),
            "bos": int(processor.bos_id()),
            "eos": int(processor.eos_id()),
        }
        self.settings: dict[str, Any] = dict(settings or {})
        with quiet_sentencepiece_logs():  # the op loads the model as it is built
            self.sp = tf_text.SentencepieceTokenizer(model=self._model_proto, out_type=tf.int32)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
        max_sentence_length: int = 16384,
        seed: int = 0,
    ) -> Tokenizer:
        """Learns a vocabulary from documents; the same input gives the same model.

        Documents are fed line by line (each line keeps its "\\n"). At most
        `MAX_TRAINING_LINES` lines are used, drawn by a seeded reservoir sample
        so huge corpora train quickly yet deterministically.
        """
        if model_type not in TOKENIZER_MODEL_TYPES:
            raise DataError(f"tokenizer model_type must be 'bpe' or 'unigram', got {model_type!r}")
        lines = _sample_lines(texts, max_sentence_length, seed)
        if not lines:
            raise DataError("no text to train the tokenizer on (every document is empty)")
        settings = {
            "model_type": model_type,
            "character_coverage": character_coverage,
            "max_sentence_length": max_sentence_length,
            "seed": seed,
            "training_lines": len(lines),
        }
        writer = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=writer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                max_sentence_length=max_sentence_length,
                byte_fallback=True,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                split_digits=True,
                user_defined_symbols=["\n"],
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                input_sentence_size=0,  # Sampling is done above, reproducibly.
                shuffle_input_sentence=False,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise _training_error(e, vocab_size) from None
        return cls(writer.getvalue(), settings)

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special and byte pieces included."""
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return self._ids["pad"]

    @property
    def unk_id(self) -> int:
        return self._ids["unk"]

    @property
    def bos_id(self) -> int:
        return self._ids["bos"]

    @property
    def eos_id(self) -> int:
        return self._ids["eos"]

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model, as saved in `tokenizer.model`."""
        return self._model_proto

    def tokenize(self, texts: tf.Tensor | str | Sequence[str]) -> tf.Tensor | tf.RaggedTensor:
        """Strings -> ids: a scalar gives 1-D int32, a [N] vector a ragged [N, None]."""
        return self.sp.tokenize(texts)

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids (1-D, dense 2-D or ragged int32) -> strings; pad/bos/eos decode to ""."""
        return self.sp.detokenize(ids)

    def encode(self, text: str) -> list[int]:
        """Eager convenience: one string -> a list of ids."""
        return self.tokenize(tf.constant(text, tf.string)).numpy().tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """Eager convenience: ids -> string (a cut multi-byte char becomes U+FFFD)."""
        out = self.detokenize(tf.constant(list(ids), tf.int32, shape=[len(ids)]))
        return out.numpy().decode("utf-8", errors="replace")

    def id_to_piece(self, ids: tf.Tensor) -> tf.Tensor:
        """Ids -> their pieces as strings, for inspecting a vocabulary."""
        return self.sp.id_to_string(ids)

    def config(self) -> dict[str, Any]:
        """What `tokenizer.json` records: type, sizes, special ids, training settings."""
        return {
            "type": "sentencepiece",
            "model_type": self.settings.get("model_type"),
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "model_sha256": hashlib.sha256(self._model_proto).hexdigest(),
            "training": dict(self.settings),
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Writes tokenizer.model and tokenizer.json; a kill never leaves a torn copy."""
        with atomic_directory(directory) as tmp:
            with open(os.path.join(tmp, MODEL_FILE), "wb") as f:
                f.write(self._model_proto)
                f.flush()
                os.fsync(f.fileno())
            with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
                json.dump(self.config(), f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())

    def save_hf(self, directory: str | os.PathLike) -> list[str]:
        """Writes `tokenizer.model` and a `tokenizer_config.json` under which transformers'
        `AutoTokenizer` gives our ids (measured on random strings: `legacy` keeps its
        converter from adding the dummy-prefix space this model does not use)."""
        with open(os.path.join(directory, MODEL_FILE), "wb") as f:
            f.write(self._model_proto)
        processor = spm.SentencePieceProcessor(model_proto=self._model_proto)
        names = {
            f"{name}_token": processor.id_to_piece(i) for name, i in self._ids.items() if i >= 0
        }
        settings = {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": False,
            "add_eos_token": False,
            "legacy": True,
            "add_prefix_space": False,
            **names,
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2)
        return [MODEL_FILE, "tokenizer_config.json"]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        """Reads a directory written by `save`, checking that it is complete and intact."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise DataError(f"tokenizer directory not found: {directory}")
        model_path = os.path.join(directory, MODEL_FILE)
        config_path = os.path.join(directory, CONFIG_FILE)
        for path in (model_path, config_path):
            if not os.path.isfile(path):
                raise DataError(f"tokenizer file missing: {path}")
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{config_path}: corrupt tokenizer config ({_one_line(e)})") from None
        if not isinstance(config, dict):
            raise DataError(f"{config_path}: corrupt tokenizer config (not a JSON object)")
        with open(model_path, "rb") as f:
            proto = f.read()
        expected = config.get("model_sha256")
        if expected and hashlib.sha256(proto).hexdigest() != expected:
            raise DataError(
                f"{model_path}: corrupt tokenizer model (sha256 does not match {CONFIG_FILE})"
            )
        try:
            tokenizer = cls(proto, config.get("training"))
        except DataError as e:
            raise DataError(f"{model_path}: {e}") from None
        if "vocab_size" in config and config["vocab_size"] != tokenizer.vocab_size:
            raise DataError(
                f"{model_path}: vocab size {tokenizer.vocab_size} does not match "
                f"{CONFIG_FILE} ({config['vocab_size']})"
            )
        return tokenizer


def _sample_lines(texts: Iterable[str], max_sentence_length: int, seed: int) -> list[str]:
    """Splits documents into lines (keeping "\\n") and reservoir-samples at most
    MAX_TRAINING_LINES of them; overlong lines are cut so the trainer does not
    silently drop them (its limit is in bytes, UTF-8 uses up to 4 per char)."""
    rng = random.Random(seed)
    chunk = max(1, max_sentence_length // 4)
    sample: list[str] = []
    for seen, line in enumerate(_lines(texts, chunk), start=1):
        if len(sample) < MAX_TRAINING_LINES:
            sample.append(line)
        else:
            j = rng.randrange(seen)
            if j < MAX_TRAINING_LINES:
                sample[j] = line
    return sample


def _lines(texts: Iterable[str], chunk: int) -> Iterator[str]:
    """Yields the non-empty lines of every document, each at most `chunk` chars."""
    for text in texts:
        for line in text.splitlines(keepends=True):
            for start in range(0, len(line), chunk):
                piece = line[start : start + chunk]
                if piece != "\n":  # A bare newline teaches the trainer nothing.
                    yield piece


def _training_error(error: RuntimeError, vocab_size: int) -> DataError:
    """Turns sentencepiece's multi-line C++ check failures into one clear line."""
    message = str(error)
    too_high = re.search(
        r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message
    )
    if too_high:
        return DataError(
            f"tokenizer vocab_size {vocab_size} is too large for this corpus; "
            f"use at most {too_high.group(1)} (or train on more text)"
        )
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return DataError(
            f"tokenizer vocab_size {vocab_size} is too small for this corpus; it needs at least "
            f"{too_low.group(1)} (256 byte pieces + specials + every distinct character), "
            "or lower character_coverage"
        )
    return DataError(f"tokenizer training failed: {_one_line(error)}")


# SentencePiece's own INFO lines ("normalizer.cc(51) LOG(INFO) precompiled_charsmap
# is empty. use identity normalization." for every model trained here). The copy
# of SentencePiece inside tensorflow_text writes them to std::cerr whenever its
# op loads a model, and its log level is private to that library: no setting,
# flag or environment variable reaches it (the `sentencepiece` package's
# `minloglevel` sets only its own copy's).
_SENTENCEPIECE_INFO = re.compile(rb"^[\w.]+\.cc\(\d+\) LOG\(INFO\) ")


@contextlib.contextmanager
def quiet_sentencepiece_logs() -> Iterator[None]:
    """Runs the body with SentencePiece's INFO lines kept off stderr (all else passes)."""
    with filtered_native_stderr(_SENTENCEPIECE_INFO):
        yield


def _one_line(error: BaseException) -> str:
    """Collapses an exception message to one line."""
    return " ".join(str(error).split()) or type(error).__name__
