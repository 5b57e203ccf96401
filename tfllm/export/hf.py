"""`tfllm-export --format=hf`: a workdir as a Hugging Face model directory.

Writes `W/export/hf/`: `config.json`, `model.safetensors` (float32) and the
tokenizer's files, for tfllm GPTs (as GPT-2: tfllm's GPT is that
architecture), llama and bert models, imported or trained here. Verified
before it is put in place, like every export: the written files are read
back with tfllm's own reader and name map into a fresh model whose logits
must equal the Keras model's bit for bit; and where transformers and torch
are installed (they are not tfllm dependencies), transformers loads the
directory too and its outputs must match within 1e-4 of the largest one.
The record says which checks ran.
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import Any

import numpy as np
import tensorflow as tf
from safetensors.numpy import save_file

from tfllm.export.verified import VerificationError, versions
from tfllm.inference.loading import TrainedModel
from tfllm.models import build_model
from tfllm.pretrained import bert, gpt2, llama
from tfllm.pretrained.hf_files import read_hf_directory
from tfllm.utils.io import atomic_directory, atomic_write_json

MAPS: dict[str, ModuleType] = {"gpt": gpt2, "llama": llama, "bert": bert}
TOLERANCE = 1e-4  # transformers vs Keras, relative to the largest output (issue 25's bar)
# Texts the exported tokenizer must split as ours does (besides the run's verify prompts).
TOKENIZER_PROBES = (
    "Hello, world! It's 2026.",
    "  leading spaces\tand tabs\n\nnew lines  ",
    "Accents: café, naïve; CJK: 東京; emoji: 🙂",
)


def hf_dir(workdir: str) -> str:
    return os.path.join(workdir, "export", "hf")


def _outputs(model: Any, ids: np.ndarray) -> np.ndarray:
    return np.asarray(model(tf.constant(ids, tf.int32)), np.float32)


def _probe_ids(trained: TrainedModel) -> np.ndarray:
    """A fixed batch of token ids inside the vocabulary and the context."""
    rng = np.random.default_rng(0)
    length = min(24, trained.model.max_length)
    low = 1 if trained.config.model.name == "bert" else 0  # BERT's 0 is padding
    return rng.integers(low, trained.tokenizer.vocab_size, size=(2, length)).astype(np.int32)


def _check_round_trip(trained: TrainedModel, directory: str, ids: np.ndarray, ours: np.ndarray):
    source = read_hf_directory(directory, with_tokenizer=False)
    family = MAPS[trained.config.model.name]
    model = build_model(trained.config.model, trained.tokenizer.vocab_size)
    family.load_into(model, source)
    theirs = _outputs(model, ids)
    if not np.array_equal(theirs, ours):
        raise VerificationError(
            f"--format=hf: the written weights read back differently "
            f"(max |Δ| {np.abs(theirs - ours).max():.3g}); nothing was written"
        )


def _check_transformers(
    trained: TrainedModel, directory: str, ids: np.ndarray, ours: np.ndarray
) -> dict[str, Any] | None:
    """transformers' own outputs on the written files, or None where it is not installed."""
    try:
        import torch  # Optional: only this check needs it.
        import transformers
    except ImportError:
        return None
    name = trained.config.model.name
    transformers.utils.logging.disable_progress_bar()  # keep the command's output ours
    with torch.no_grad():
        if name == "bert":
            hf = transformers.AutoModel.from_pretrained(directory).eval()
            mask = torch.ones(ids.shape, dtype=torch.long)
            theirs = hf(torch.tensor(ids.astype(np.int64)), attention_mask=mask)
            theirs = theirs.last_hidden_state.numpy()
        else:
            hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
            theirs = hf(torch.tensor(ids.astype(np.int64))).logits.numpy()
    delta = float(np.abs(theirs - ours).max())
    scale = float(np.abs(ours).max())
    if delta > TOLERANCE * scale:
        raise VerificationError(
            f"--format=hf: transformers' outputs differ from Keras by {delta:.3g} "
            f"(> {TOLERANCE:g} × {scale:.3g}); nothing was written"
        )
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    texts = [*trained.config.export.verify_prompts, *TOKENIZER_PROBES]
    for text in texts:
        theirs_ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        if theirs_ids != trained.tokenizer.encode(text):
            raise VerificationError(
                f"--format=hf: transformers' tokenizer splits {text!r} differently "
                f"({theirs_ids[:8]}… vs {trained.tokenizer.encode(text)[:8]}…); nothing was written"
            )
    return {
        "transformers": transformers.__version__,
        "max_abs_diff": delta,
        "max_abs": scale,
        "tokenizer_texts_identical": len(texts),
    }


def export_hf(trained: TrainedModel, target: str | None = None) -> dict[str, Any]:
    """Writes and verifies the Hugging Face directory; returns its verification record."""
    name = trained.config.model.name
    if name not in MAPS:
        raise VerificationError(
            f"--format=hf: {name!r} models have no Hugging Face layout (gpt, llama and bert do)"
        )
    if trained.config.compress.method == "quantize":
        raise VerificationError(
            "--format=hf: this workdir holds Keras-quantized int kernels; export its float "
            "source workdir instead"
        )
    target = target or hf_dir(trained.workdir)
    if name == "llama":
        config, tensors = llama.to_hf(trained.model, trained.config.model.get("context_length", 0))
    else:
        config, tensors = MAPS[name].to_hf(trained.model)
    ids = _probe_ids(trained)
    ours = _outputs(trained.model, ids)
    with atomic_directory(target) as tmp:
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer_files = trained.tokenizer.save_hf(str(tmp))
        _check_round_trip(trained, str(tmp), ids, ours)
        transformers_check = _check_transformers(trained, str(tmp), ids, ours)
        record = {
            "format": "hf",
            "family": config["model_type"],
            "checkpoint": trained.checkpoint,
            "tensors": len(tensors),
            "tokenizer_files": tokenizer_files,
            "round_trip": "identical outputs after reading the files back",
            "transformers": transformers_check or "not installed: not checked",
            "versions": versions(),
        }
        atomic_write_json(tmp / "verification.json", record)
    return record
