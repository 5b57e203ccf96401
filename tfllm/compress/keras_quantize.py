"""Quantization inside Keras (`model.quantize("int8" | "int4")`).

Keras 3 quantizes Dense / EinsumDense kernels in place (int8: per output
channel; int4: packed, with a scale per channel) and quantizes each layer's
inputs to int8 on the fly in `call` (dynamic, per row: W8A8 / W4A8, not
weight-only, so it costs more accuracy than weight-only int8 would). The
model stays a Keras model: evaluate, generate and resume from it as usual. It
needs no data and no training — the in-Keras counterpart of the TFLite
converter's dynamic-range mode. A quantized model's checkpoint holds int8
kernels plus scales, so `tfllm.inference.loading.load_trained` calls
`tfllm.models.quantized.quantize_in_place` on the freshly built model *before*
restoring (`config.compress.method == "quantize"`).
"""

from __future__ import annotations

import os
import shutil

import ml_collections
import tensorflow as tf

from tfllm.config import CLASSIFIER_NAMES, config_to_json
from tfllm.data.labels import LABELS_FILE
from tfllm.errors import ConfigError, DataError
from tfllm.evaluation.workdir import evaluate_workdir
from tfllm.inference.loading import load_trained
from tfllm.models.quantized import quantize_in_place, weight_bytes
from tfllm.utils.io import atomic_write_json, atomic_write_text


def quantize_workdir(source: str, output: str, config: ml_collections.ConfigDict) -> dict:
    """Writes OUT: the source model quantized, its tokenizer, labels, config, metrics."""

    trained = load_trained(source)
    before = weight_bytes(trained.model)
    quantize_in_place(trained.model, config.compress.quantize_mode)
    os.makedirs(output, exist_ok=True)
    for name in ("tokenizer",):
        target = os.path.join(output, name)
        if not os.path.isdir(target):
            shutil.copytree(os.path.join(source, name), target + ".tmp-copy", dirs_exist_ok=True)
            os.replace(target + ".tmp-copy", target)
    if config.model.name in CLASSIFIER_NAMES:
        shutil.copyfile(os.path.join(source, LABELS_FILE), os.path.join(output, LABELS_FILE))
    atomic_write_text(os.path.join(output, "config.json"), config_to_json(config))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=trained.model), os.path.join(output, "checkpoints"), 1
    )
    manager.save(checkpoint_number=max(trained.step, 0))
    metrics = {"step": trained.step, "num_params": int(trained.model.count_params())}
    metrics.update(_evaluate(trained))
    metrics["weight_bytes"] = weight_bytes(trained.model)
    metrics["source_weight_bytes"] = before
    atomic_write_json(os.path.join(output, "metrics.json"), metrics)
    return metrics


def _evaluate(trained) -> dict:
    """The eval split's headline metrics of the quantized Keras model ({} without one)."""
    try:
        evaluation = evaluate_workdir(trained, split="eval", write_png=False)
    except (ConfigError, DataError):  # no eval split, or one smaller than a batch of
        return {}  # windows (an imported model's 2,048-token windows): nothing to report
    metrics = evaluation.metrics
    if evaluation.is_classifier:
        return {("eval_loss" if k == "log_loss" else k): v for k, v in metrics.items()}
    return {"eval_loss": metrics["loss"], "perplexity": metrics["perplexity"]}
