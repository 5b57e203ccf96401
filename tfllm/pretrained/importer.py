"""`tfllm-import`: a published checkpoint becomes an ordinary tfllm workdir.

The workdir holds what `tfllm-train` leaves: `config.json` (the family and
its hyper-parameters under `config.model`), `tokenizer/` (in-graph, plus the
chat template where the model has one) and `checkpoints/ckpt-0` (the weights,
converted once, so every later command loads them as fast as any run's),
and `import.json` recording where they came from. It is written in a temp
directory and renamed into place: a failed import leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from tfllm import __version__
from tfllm.config import base_config, config_to_json, validate
from tfllm.data.byte_bpe import ByteBPETokenizer
from tfllm.data.tokenizer import Tokenizer
from tfllm.data.tokenizer_kinds import CHAT_TEMPLATE_FILE  # inside tokenizer/: init_from copies it
from tfllm.data.wordpiece import WordPieceTokenizer
from tfllm.errors import ConfigError, DataError, WorkdirError
from tfllm.models import build_model
from tfllm.pretrained import bert, gpt2, llama
from tfllm.pretrained.gguf_files import read_gguf
from tfllm.pretrained.hf_files import read_hf_directory
from tfllm.pretrained.source import SourceCheckpoint
from tfllm.utils.checkpoints import sync_checkpoint
from tfllm.utils.io import atomic_directory, atomic_write_json, atomic_write_text

FAMILY_MAPS: dict[str, ModuleType] = {"llama": llama, "gpt2": gpt2, "bert": bert}
IMPORT_RECORD = "import.json"


@dataclass
class ImportReport:
    """What an import did, for the command's summary and `import.json`."""

    workdir: str
    family: str
    format: str
    num_params: int
    vocab_size: int
    seconds: float
    peak_rss_mb: float
    adds_bos: bool = False  # the source tokenizer starts every text with BOS (tfllm does not)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_source(path: str) -> SourceCheckpoint:
    """A `.gguf` file or a Hugging Face directory, read into Hugging Face terms."""
    if os.path.isdir(path):
        return read_hf_directory(path)
    if path.endswith(".gguf"):
        return read_gguf(path)
    if os.path.exists(path):
        raise DataError(f"--source: {path} is neither a .gguf file nor a model directory")
    raise DataError(f"--source: no such file or directory: {path}")


def build_tokenizer(source: SourceCheckpoint):
    """The model's own tokenizer, in-graph (byte-level BPE, SentencePiece or BERT WordPiece)."""
    spec = source.tokenizer
    if spec["kind"] == "gguf":
        return ByteBPETokenizer.from_gguf_fields(
            tokens=spec["tokens"],
            merges=spec["merges"],
            token_types=spec["token_types"],
            pre=spec["pre"],
            bos_id=spec["bos_id"],
            eos_id=spec["eos_id"],
            pad_id=spec["pad_id"],
            unk_id=spec["unk_id"],
        )
    if spec["kind"] == "hf_json":
        return _hf_byte_bpe(source)
    if spec["kind"] == "sentencepiece":
        with open(spec["path"], "rb") as f:
            try:
                return Tokenizer(f.read())
            except DataError as e:
                raise DataError(f"{spec['path']}: {e}") from None
    return WordPieceTokenizer.from_hf_directory(spec["directory"])


def _hf_byte_bpe(source: SourceCheckpoint) -> ByteBPETokenizer:
    """A `tokenizer.json`'s BPE; BOS/EOS the model's `config.json` names where the
    tokenizer files do not (GPT-2 names `<|endoftext|>` only there), so documents
    are separated and generation stops as the model was trained to."""
    path = source.tokenizer["path"]
    tokenizer = ByteBPETokenizer.from_hf_tokenizer_json(path)
    missing = {}
    for name in ("bos", "eos"):
        token_id = source.config.get(f"{name}_token_id")
        if isinstance(token_id, list):  # Llama 3 lists every end-of-turn token; the first is EOS
            token_id = token_id[0] if token_id else None
        if getattr(tokenizer, f"{name}_id") < 0 and isinstance(token_id, int):
            if 0 <= token_id < tokenizer.vocab_size:
                piece = tokenizer.id_to_piece(tf.constant([token_id])).numpy()[0]
                missing[f"{name}_token"] = piece.decode("utf-8")
    return ByteBPETokenizer.from_hf_tokenizer_json(path, **missing) if missing else tokenizer


def adds_bos(source: SourceCheckpoint) -> bool:
    """Whether the source's own tokenizer starts every text with its BOS token.

    Llama 2 / TinyLlama (SentencePiece, `add_bos_token` defaults to true) and
    Llama 3 (a `TemplateProcessing` post-processor in tokenizer.json) do;
    SmolLM2 and GPT-2 do not. tfllm does not prepend BOS yet, so the importer
    says so rather than letting outputs drift from transformers' in silence.
    """
    spec = source.tokenizer
    if spec.get("kind") == "gguf":
        return bool(spec.get("add_bos"))
    directory = spec.get("directory") or os.path.dirname(spec.get("path", ""))
    config_path = os.path.join(directory, "tokenizer_config.json")
    tokenizer_config: dict[str, Any] = {}
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            tokenizer_config = json.load(f)
    if "add_bos_token" in tokenizer_config:
        return bool(tokenizer_config["add_bos_token"])
    if spec.get("kind") == "sentencepiece":
        return True  # LlamaTokenizer's default
    if spec.get("kind") == "hf_json":
        with open(spec["path"], encoding="utf-8") as f:
            processor = json.load(f).get("post_processor") or {}
        processors = processor.get("processors", [processor])
        for step in processors:
            single = step.get("single") or []
            if step.get("type") == "TemplateProcessing" and single and "SpecialToken" in single[0]:
                return True
    return False


def workdir_config(source: SourceCheckpoint, tokenizer: Any) -> ml_collections.ConfigDict:
    """The full config of an imported workdir: defaults, with the checkpoint's model section."""
    family = FAMILY_MAPS.get(source.family)
    if family is None:
        raise DataError(f"{source.origin}: importing the {source.family!r} family is not supported")
    config = base_config()
    model = family.model_config(source)
    for key, value in model.items():
        config.model[key] = type(config.model[key])(value)
    config.tokenizer.vocab_size = int(tokenizer.vocab_size)
    try:
        validate(config)
    except ConfigError as e:
        raise DataError(
            f"{source.origin}: the checkpoint's config does not fit tfllm ({e})"
        ) from None
    return config


def _check_vocab(source: SourceCheckpoint, tokenizer: Any, family: ModuleType) -> None:
    rows = family.vocab_size(source)
    if rows != tokenizer.vocab_size:
        raise DataError(
            f"{source.origin}: the embedding has {rows} rows but the tokenizer "
            f"{tokenizer.vocab_size} tokens (padded vocabularies are not supported yet)"
        )


def _smoke_test(model: Any, family: str, origin: str) -> None:
    """Finite outputs on a few tokens: a last check before anything is written."""
    out = model(tf.constant([[1, 2, 3, 4]], tf.int32))
    if not np.all(np.isfinite(np.asarray(out))):
        raise DataError(f"{origin}: the imported {family} model gives non-finite outputs")


def import_checkpoint(source_path: str, workdir: str) -> ImportReport:
    """Reads `source_path`, maps it onto a tfllm model and writes the workdir atomically."""
    started = time.perf_counter()
    if os.path.exists(workdir) and os.listdir(workdir):
        raise WorkdirError(f"--workdir: {workdir} is not empty (import into a new directory)")
    source = read_source(source_path)
    family = FAMILY_MAPS.get(source.family)
    if family is None:
        raise DataError(f"{source.origin}: importing the {source.family!r} family is not supported")
    tokenizer = build_tokenizer(source)
    _check_vocab(source, tokenizer, family)
    config = workdir_config(source, tokenizer)
    model = build_model(config.model, tokenizer.vocab_size)
    family.load_into(model, source)
    _smoke_test(model, source.family, source.origin)
    num_params = int(model.count_params())
    del source.tensors  # the float32 copies: the model holds the weights now

    with atomic_directory(workdir) as tmp:
        tokenizer.save(tmp / "tokenizer")
        if source.chat_template:
            atomic_write_text(tmp / "tokenizer" / CHAT_TEMPLATE_FILE, source.chat_template)
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model), str(tmp / "checkpoints"), max_to_keep=1
        )
        sync_checkpoint(manager.save(checkpoint_number=0))
        atomic_write_text(tmp / "config.json", config_to_json(config))
        report = ImportReport(
            workdir=workdir,
            family=source.family,
            format=source.format,
            num_params=num_params,
            vocab_size=int(tokenizer.vocab_size),
            seconds=round(time.perf_counter() - started, 2),
            adds_bos=adds_bos(source) if source.family != "bert" else False,
            # ru_maxrss is KiB on Linux: the process's peak, reading and converting included.
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        )
        atomic_write_json(
            tmp / IMPORT_RECORD,
            {
                **report.as_dict(),
                "source": os.path.abspath(source_path),
                "source_config": source.config,
                "tfllm_version": __version__,
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return report
