"""Run an exported tfllm text classifier with LiteRT: numpy + sentencepiece + ai_edge_litert.

This module imports no TensorFlow (and nothing else from tfllm that does), so
it is what an edge or embedded Python user copies next to the files that
`tfllm-export --format=tflite` writes into `W/export/tflite_<quantize>/`:

    model.tflite      signature "classify": token_ids int32 [batch, max_length]
                      -> probabilities float32 [batch, num_classes]
    tokenizer.model   the run's SentencePiece model (the tokenizer does not run
                      inside the .tflite; see tfllm.export.classifier_tflite)
    labels.json       {"names": [...]}: class names in class-id order
    classifier.json   max_length, pad/bos ids, signature/input/output names

    clf = LiteRTClassifier("runs/cnn_sst2/export/tflite_int8")
    clf.predict(["a gorgeous, witty film", "a dull mess"])  # -> ["1", "0"]

Encoding is exactly training's (`tfllm.data.classification_data.encode_texts`):
`[bos] + pieces`, cut to `max_length`, then right-padded with the pad id to
`max_length` (every tfllm classifier ignores padding, so the fixed length
changes no logit). The Python `sentencepiece` package and the
`tensorflow_text` op used in training wrap the same C++ library with the same
defaults (no sampling, no bos/eos, the model's own normalizer), so the ids
are identical; the export re-checks this on its verification rows.

A classifier on an imported BERT (`bert_classifier`) ships its WordPiece
tokenizer instead (`vocab.txt` + `tokenizer.json`, no `tokenizer.model`).
There is no TensorFlow-free WordPiece with Hugging Face's normalization to
use, so for such an export `encode` imports tfllm's in-graph tokenizer
(TensorFlow and tensorflow_text) and builds `[CLS] pieces [SEP]` rows with
training's own `encode_texts`; the model itself still runs on LiteRT only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

try:  # Inside tfllm: a user error prints as one line from the CLI.
    from tfllm.errors import TfllmError as _ErrorBase
except ImportError:  # Copied out of tfllm: a plain exception.
    _ErrorBase = Exception  # type: ignore[assignment,misc]

MODEL_FILE = "model.tflite"
TOKENIZER_FILE = "tokenizer.model"
TFLLM_TOKENIZER_FILE = "tokenizer.json"  # an imported (WordPiece) tokenizer's, see above
LABELS_FILE = "labels.json"
CONFIG_FILE = "classifier.json"


class LiteRTClassifierError(_ErrorBase):
    """The export directory is missing or incomplete."""


class LiteRTClassifier:
    """A tfllm classifier `.tflite` plus its tokenizer and labels, ready to call.

    Args:
        export_dir: a `W/export/tflite_<quantize>/` directory.
        num_threads: LiteRT CPU threads (None: LiteRT's default).
    """

    def __init__(self, export_dir: str, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        tokenizer_file = (
            TFLLM_TOKENIZER_FILE
            if not os.path.isfile(os.path.join(export_dir, TOKENIZER_FILE))
            and os.path.isfile(os.path.join(export_dir, TFLLM_TOKENIZER_FILE))
            else TOKENIZER_FILE
        )
        paths = {
            name: os.path.join(export_dir, name)
            for name in (MODEL_FILE, tokenizer_file, LABELS_FILE, CONFIG_FILE)
        }
        missing = [name for name, path in paths.items() if not os.path.isfile(path)]
        if missing:
            raise LiteRTClassifierError(
                f"{export_dir}: not a tfllm classifier TFLite export (missing "
                f"{', '.join(missing)}; run tfllm-export --format=tflite)"
            )
        with open(paths[CONFIG_FILE], encoding="utf-8") as f:
            self.config: dict = json.load(f)
        with open(paths[LABELS_FILE], encoding="utf-8") as f:
            self.labels: list[str] = list(json.load(f)["names"])
        self._sp = None
        self._tokenizer = None  # tfllm's (TensorFlow) tokenizer, for a WordPiece export
        self._encode_graph = None  # its encoding as a traced tf.function (`_wordpiece_rows`)
        if tokenizer_file == TOKENIZER_FILE:
            import sentencepiece as spm

            with open(paths[TOKENIZER_FILE], "rb") as f:
                self._sp = spm.SentencePieceProcessor(model_proto=f.read())
        else:
            # WordPiece needs TensorFlow: imported only for such an export (module docstring).
            from tfllm.data.tokenizer_kinds import load_shipped_tokenizer

            self._tokenizer = load_shipped_tokenizer(export_dir)
        self.max_length = int(self.config["max_length"])
        self.pad_id = int(self.config["pad_id"])
        self.bos_id = int(self.config["bos_id"])
        self._input = self.config["input"]
        self._output = self.config["output"]
        self._interpreter = Interpreter(model_path=paths[MODEL_FILE], num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner(self.config["signature"])
        shape = self._runner.get_input_details()[self._input]["shape_signature"]
        # A model converted with a static batch of 1 is run row by row.
        self.dynamic_batch = int(shape[0]) == -1

    def signature(self) -> dict:
        """Input/output names, shapes (-1: dynamic) and dtypes of the model's signature."""

        def describe(details: dict) -> dict:
            return {
                name: {
                    "shape": [int(n) for n in d["shape_signature"]],
                    "dtype": d["dtype"].__name__,
                }
                for name, d in details.items()
            }

        return {
            "name": self.config["signature"],
            "inputs": describe(self._runner.get_input_details()),
            "outputs": describe(self._runner.get_output_details()),
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> int32 ids [N, max_length]: `[bos] + pieces` (WordPiece:
        `[CLS] pieces [SEP]`), cut, right-padded."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = np.full((len(texts), self.max_length), self.pad_id, dtype=np.int32)
        if not texts:
            return ids
        if self._tokenizer is not None:
            return self._wordpiece_rows(texts)
        for i, pieces in enumerate(self._sp.encode(texts, out_type=int)):
            row = [self.bos_id, *pieces][: self.max_length]
            ids[i, : len(row)] = row
        return ids

    def _wordpiece_rows(self, texts: list[str]) -> np.ndarray:
        """A WordPiece export's rows, encoded as training encodes them (`encode_texts`).

        Traced once into a tf.function: run eagerly, the tokenizer's dozens of ops
        cost 25-60 ms per call on a 2-core CPU, a hundred times the CNN student's
        model (docs/finetuning.md), and one graph call is what a server pays.
        """
        import tensorflow as tf  # a WordPiece export only: TF-free runners never get here

        if self._encode_graph is None:
            from tfllm.data.classification_data import encode_texts  # as training encodes

            tokenizer, max_length, pad_id = self._tokenizer, self.max_length, self.pad_id

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def encode_graph(batch: tf.Tensor) -> tf.Tensor:
                rows = encode_texts(tokenizer, batch, max_length)
                return rows.to_tensor(default_value=pad_id, shape=[None, max_length])

            self._encode_graph = encode_graph
        rows = self._encode_graph(tf.constant(texts, tf.string))
        return np.asarray(rows.numpy(), dtype=np.int32)

    def predict_proba_ids(self, ids: np.ndarray) -> np.ndarray:
        """Token ids [N, max_length] (from `encode`) -> probabilities float32 [N, C]."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim != 2 or ids.shape[1] != self.max_length:
            raise ValueError(f"ids must be [N, {self.max_length}], got {list(ids.shape)}")
        if ids.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        rows = [ids] if self.dynamic_batch else [ids[i : i + 1] for i in range(ids.shape[0])]
        parts = [self._runner(**{self._input: r})[self._output] for r in rows]
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Strings -> softmax probabilities float32 [N, num_classes], columns in `labels` order."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = [
            self.predict_proba_ids(self.encode(texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]
        if not parts:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(parts, axis=0)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        """Strings -> the most probable class name of each."""
        probabilities = self.predict_proba(texts, batch_size=batch_size)
        return [self.labels[i] for i in probabilities.argmax(axis=-1)]
