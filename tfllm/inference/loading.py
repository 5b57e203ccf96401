"""Rebuild a trained model from a workdir: config.json + tokenizer/ + checkpoints/."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import keras
import ml_collections
import tensorflow as tf

from tfllm import distribute
from tfllm.config import CLASSIFIER_NAMES, load_workdir_config
from tfllm.data.labels import LabelVocab
from tfllm.data.tokenizer_kinds import AnyTokenizer, load_tokenizer
from tfllm.errors import WorkdirError
from tfllm.models import build_model
from tfllm.models.lora import apply_lora, lora_settings, merge_lora
from tfllm.models.quantized import quantize_in_place
from tfllm.utils.checkpoints import (
    checkpoint_at_step,
    kept_checkpoints,
    restore_newest,
    restore_weights,
)


@dataclass
class TrainedModel:
    config: ml_collections.ConfigDict
    model: keras.Model
    tokenizer: AnyTokenizer
    checkpoint: str
    step: int
    labels: LabelVocab | None = None  # classifiers only
    workdir: str = ""

    @property
    def is_classifier(self) -> bool:
        return self.labels is not None


def load_trained(
    workdir: str, strategy: tf.distribute.Strategy | None = None, step: int | None = None
) -> TrainedModel:
    """Loads the newest readable checkpoint's weights into a freshly built model
    (with `step`, that step's kept checkpoint instead).

    Only the model is restored (the optimizer slots in the checkpoint are
    skipped with `expect_partial`), so inference needs no training state. A
    LoRA run's model is rebuilt with its adapters, restored, then merged
    (`tfllm.models.lora.merge_lora`): callers get the plain model.
    Nothing here unpickles or executes files from the workdir.

    With `strategy`, the model is built under its scope (mirrored variables,
    or sharded on a tensor-parallel mesh) so distributed inference reads
    per-device weights; checkpoints are layout-free, so any run restores
    into any strategy. The restore itself runs outside the scope: under a
    mesh scope TensorFlow's checkpoint would create its own counter variable
    through the mesh's variable creator, which fails.
    """

    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir: no such directory: {workdir}")
    config = load_workdir_config(workdir)
    tokenizer_dir = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        raise WorkdirError(f"--workdir: {workdir} has no tokenizer/ (run tfllm-train first)")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    if not kept_checkpoints(checkpoint_dir):
        raise WorkdirError(f"--workdir: {workdir} has no checkpoint (run tfllm-train first)")
    tokenizer = load_tokenizer(tokenizer_dir)
    labels = LabelVocab.load(workdir) if config.model.name in CLASSIFIER_NAMES else None

    lora = lora_settings(config.train)

    def build() -> keras.Model:
        model = build_model(config.model, tokenizer.vocab_size, labels and labels.num_classes)
        apply_lora(model, lora)  # a LoRA run's checkpoint holds the adapters too
        return model

    if strategy is None:
        model = build()
    else:
        with strategy.scope():
            model = distribute.build_model(strategy, build)
    if config.get("compress") and config.compress.method == "quantize":
        # The checkpoint holds int8 kernels + scales: give the model those variables first.
        quantize_in_place(model, config.compress.quantize_mode)
    mismatch = "checkpoint does not match the model in config.json"
    if step is not None:
        latest = checkpoint_at_step(checkpoint_dir, step)
        restore_weights(latest, {"model": model}, partial=True, mismatch=mismatch)
    else:
        # The newest checkpoint that reads back whole (a truncated latest one falls
        # back to the previous with one warning line; none readable: WorkdirError).
        latest = restore_newest(checkpoint_dir, {"model": model}, partial=True, mismatch=mismatch)
    if lora.rank:
        # Adapters folded into the kernels: evaluation, generation and every export
        # see the plain family model (nothing new at run time).
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            merge_lora(model)
    step = int(latest.rsplit("-", 1)[-1]) if latest.rsplit("-", 1)[-1].isdigit() else -1
    return TrainedModel(config, model, tokenizer, latest, step, labels, workdir)
