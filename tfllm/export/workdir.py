"""Exporting a workdir: the one library call behind `tfllm-export` and the
pipelines' export stages.

It picks the exporter for the model kind and format (LM or classifier;
SavedModel or TFLite), gives it the run's own verification data (prompts,
eval windows, eval rows), and returns the exporter's verification record.
Every exporter checks its artifact against the Keras model before the
artifact is put in place, so a returned record means a verified file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tfllm.data.sources import lm_token_streams, load_text_splits
from tfllm.errors import ConfigError
from tfllm.export.classifier_saved_model import export_trained_classifier
from tfllm.export.classifier_tflite import export_classifier_tflite
from tfllm.export.hf import export_hf, hf_dir
from tfllm.export.litert import tflite_dir
from tfllm.export.litertlm import DEFAULT_VERIFY_WINDOWS as LITERTLM_VERIFY_WINDOWS
from tfllm.export.litertlm import export_litertlm
from tfllm.export.litertlm_model import LITERTLM_QUANTIZE
from tfllm.export.lm_saved_model import export_saved_model
from tfllm.export.lm_tflite import DEFAULT_VERIFY_WINDOWS, export_lm_tflite
from tfllm.inference.generate import Generator, generate_text
from tfllm.inference.litertlm_runner import litertlm_dir
from tfllm.inference.loading import TrainedModel, load_trained

FORMATS = ("saved_model", "tflite", "hf", "litertlm")
# Eval rows a classifier's exports are checked on by default.
DEFAULT_VERIFY_EXAMPLES = 256


@dataclass
class Export:
    """Where the verified artifact went, and its verification record."""

    trained: TrainedModel
    format: str
    directory: str
    record: dict

    @property
    def verification(self) -> str:
        return os.path.join(self.directory, "verification.json")


def export_dir(workdir: str, fmt: str, quantize: str = "none") -> str:
    """`W/export/saved_model`, `W/export/hf`, `W/export/tflite_<quantize>` or
    `W/export/litertlm_<quantize>`."""
    if fmt == "saved_model":
        return os.path.join(workdir, "export", "saved_model")
    if fmt == "hf":
        return hf_dir(workdir)
    if fmt == "litertlm":
        return litertlm_dir(workdir, quantize)
    return tflite_dir(workdir, quantize)


def export_workdir(
    workdir: str | TrainedModel,
    fmt: str = "saved_model",
    quantize: str = "none",
    *,
    max_new_tokens: int | None = None,
    verify_examples: int | None = None,
    max_abs_diff: float | None = None,
    max_perplexity_increase: float | None = None,
    max_accuracy_drop: float | None = None,
) -> Export:
    """Exports the workdir's latest checkpoint (or an already loaded model), verified.

    `verify_examples` is eval rows for a classifier, eval windows for an LM's
    TFLite (each exporter's default when None); `max_new_tokens` is the LM
    SavedModel's generation length (the run's `config.export` when None).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in ("saved_model", "hf") and quantize != "none":
        raise ConfigError(
            f"--quantize: {fmt} export is float only; use --format=tflite to quantize"
        )
    if fmt == "litertlm" and quantize not in LITERTLM_QUANTIZE:
        raise ConfigError(
            f"--quantize: --format=litertlm takes {', '.join(LITERTLM_QUANTIZE)}, got {quantize!r}"
        )
    if fmt == "tflite" and quantize == "int4":
        raise ConfigError("--quantize=int4: only with --format=litertlm (LiteRT's blockwise int4)")
    trained = workdir if isinstance(workdir, TrainedModel) else load_trained(workdir)
    if fmt == "hf":
        return Export(trained, fmt, hf_dir(trained.workdir), export_hf(trained))
    if fmt == "litertlm" and trained.is_classifier:
        raise ConfigError("--format=litertlm: language models only (gpt, llama); "
                          "export a classifier with --format=tflite")  # fmt: skip
    if trained.config.model.name == "bert":
        raise ConfigError(
            f"--format={fmt}: bert encoders export to Hugging Face layout only (--format=hf) "
            "until the encoder tasks land"
        )
    if fmt in ("tflite", "litertlm") and trained.config.compress.method == "quantize":
        raise ConfigError(
            f"--format={fmt}: {trained.workdir} holds Keras-quantized "
            f"({trained.config.compress.quantize_mode}) kernels, which the TFLite converter "
            "rejects ('tfl.fully_connected' op operand #0 must be … but got i8); export the "
            "float source workdir with --quantize=dynamic|int8 instead (docs/compression.md)"
        )
    target = export_dir(trained.workdir, fmt, quantize)
    examples = verify_examples or DEFAULT_VERIFY_EXAMPLES
    if fmt == "saved_model" and trained.is_classifier:
        record = export_trained_classifier(trained, target, examples)
    elif fmt == "saved_model":
        record = _lm_saved_model(trained, target, max_new_tokens)
    elif fmt == "litertlm":
        record = _lm_litertlm(trained, target, quantize, verify_examples, max_abs_diff,
                              max_perplexity_increase)  # fmt: skip
    elif trained.is_classifier:
        record = export_classifier_tflite(
            trained,
            target,
            quantize,
            examples,
            max_abs_diff=max_abs_diff,
            max_accuracy_drop=max_accuracy_drop,
        )
    else:
        record = _lm_tflite(trained, target, quantize, verify_examples, max_abs_diff,
                            max_perplexity_increase)  # fmt: skip
    return Export(trained, fmt, target, record)


def _lm_saved_model(trained: TrainedModel, target: str, max_new_tokens: int | None) -> dict:
    """Strings in, strings out; its greedy text must equal the Keras model's."""
    max_new = max_new_tokens or int(trained.config.export.max_new_tokens)
    prompts = list(trained.config.export.verify_prompts)
    reference = generate_text(Generator(trained.model), trained.tokenizer, prompts, max_new)
    return export_saved_model(
        trained.model,
        trained.tokenizer,
        target,
        max_new_tokens=max_new,
        verify_prompts=prompts,
        reference=reference,
    )


def _token_streams(trained: TrainedModel):
    """The run's (train, eval) token ids; eval falls back to train when the run has none."""
    train_ids, eval_ids = lm_token_streams(
        trained.config, trained.tokenizer, load_text_splits(trained.config.data)
    )
    return train_ids, train_ids if eval_ids is None else eval_ids


def _lm_tflite(
    trained: TrainedModel,
    target: str,
    quantize: str,
    verify_windows: int | None,
    max_abs_diff: float | None,
    max_perplexity_increase: float | None,
) -> dict:
    """KV-cache prefill/decode signatures, verified on the run's eval windows."""
    train_ids, eval_ids = _token_streams(trained)
    return export_lm_tflite(
        trained,
        target,
        quantize,
        eval_ids=eval_ids,
        train_ids=train_ids,
        verify_windows=verify_windows or DEFAULT_VERIFY_WINDOWS,
        max_abs_diff=max_abs_diff,
        max_perplexity_increase=max_perplexity_increase,
    )


def _lm_litertlm(
    trained: TrainedModel,
    target: str,
    quantize: str,
    verify_windows: int | None,
    max_abs_diff: float | None,
    max_perplexity_increase: float | None,
) -> dict:
    """The LiteRT-LM bundle, verified in the engine on the run's eval text."""
    return export_litertlm(
        trained,
        target,
        quantize,
        eval_ids=_token_streams(trained)[1],
        verify_windows=verify_windows or LITERTLM_VERIFY_WINDOWS,
        max_abs_diff=max_abs_diff,
        max_perplexity_increase=max_perplexity_increase,
    )
