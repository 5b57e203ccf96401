"""`tfllm-compress` as a library call: a trained workdir in, a compressed workdir out.

The output is an ordinary workdir (config.json, tokenizer/, checkpoints/,
metrics.json): `tfllm-evaluate`, `tfllm-export` and `tfllm-generate` work on
it unchanged. Its `config.compress` section records the method, so re-running
the same command (or `tfllm-train --workdir=OUT`) resumes it, masks and
quantizer ranges included. `compression.json` records what was measured.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass

import ml_collections
import tensorflow as tf

from tfllm.compress.augment import AugmentSettings
from tfllm.compress.distill import DistillationPlugin
from tfllm.compress.keras_quantize import quantize_workdir
from tfllm.config import (
    CLASSIFIER_NAMES,
    COMPRESS_METHODS,
    ENCODER_NAMES,
    LM_NAMES,
    PRUNE_SCHEDULES,
    QUANTIZE_MODES,
    base_config,
    load_config_file,
    load_workdir_config,
    validate,
)
from tfllm.data.labels import LABELS_FILE
from tfllm.data.tokenizer_kinds import tokenizer_kind
from tfllm.errors import ConfigError, WorkdirError
from tfllm.inference.loading import load_trained
from tfllm.models.lora import copy_weights, lora_settings
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.run import train
from tfllm.utils.checkpoints import kept_checkpoints, restore_newest
from tfllm.utils.io import atomic_write_json, read_json

COMPRESSION_FILE = "compression.json"
# Metrics carried into compression.json, before and after.
_REPORTED = ("accuracy", "macro_f1", "roc_auc", "eval_loss", "perplexity", "num_params")


@dataclass(frozen=True)
class CompressOptions:
    """The `tfllm-compress` flags (0 / "" = the method's default)."""

    method: str
    steps: int = 0
    learning_rate: float = 0.0
    sparsity: float = 0.8
    schedule: str = "polynomial"
    m_by_n: str = ""
    prune_embeddings: bool = True
    prune_frequency: int = 0
    student_config: str = ""
    temperature: float = 2.0
    alpha: float = 0.5
    student_embeddings: str = "random"  # distill: or "teacher" (a copy of its token table)
    augment: float = 0.0  # distill: fraction of each batch augmented (tfllm.compress.augment)
    augment_mask: float = 0.1
    augment_ngram: float = 0.25
    mode: str = "int8"  # quantize: Keras 3 weight-only int8 | int4
    # distill: the student's config itself, for library callers (the journey)
    # that hold one rather than a file; takes the place of `student_config`.
    student: ml_collections.ConfigDict | None = None


class StartFromSource(TrainingPlugin):
    """Prune/QAT runs start from the source workdir's whole model (head included)."""

    name = "start_from_source"

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def initialize(self, model):
        if lora_settings(load_workdir_config(self.workdir).train).rank:
            # A LoRA source: its adapters merged into the kernels, then copied whole.
            source = load_trained(self.workdir)
            try:
                copy_weights(model, source.model)
            except ValueError as e:
                raise WorkdirError(f"--workdir: {self.workdir}: {e}") from None
            return f"Starting from {source.checkpoint} (LoRA adapters merged)"
        latest = restore_newest(  # the newest readable one
            os.path.join(self.workdir, "checkpoints"),
            {"model": model},
            partial=True,
            mismatch="does not match the model in config.json",
        )
        if not latest:
            raise WorkdirError(f"--workdir: {self.workdir} has no checkpoint to compress")
        return f"Starting from {latest}"


def training_plugins(config: ml_collections.ConfigDict) -> tuple[TrainingPlugin, ...]:
    """The plugins `config.compress.method` asks for (none for a plain training run)."""
    c = config.compress
    if not c.method:
        return ()
    if c.method == "quantize":
        raise ConfigError(
            "config.compress.method: a 'quantize' workdir holds int8/int4 kernels and cannot be "
            "trained further; train the source and quantize again"
        )
    if c.method == "prune":
        # tfmot (and tf_keras under it) load only when a pruning or QAT run needs them.
        from tfllm.compress.pruning import PruningPlugin, spec_from_config

        return StartFromSource(c.source), PruningPlugin(spec_from_config(config))
    if c.method == "qat":
        from tfllm.compress.quantization import QATPlugin  # tfmot, as above

        return StartFromSource(c.source), QATPlugin()

    augment = AugmentSettings(
        rows=float(c.get("augment", 0.0)),
        mask=float(c.get("augment_mask", 0.1)),
        ngram=float(c.get("augment_ngram", 0.25)),
    )
    return (
        DistillationPlugin(
            c.source,
            float(c.temperature),
            float(c.alpha),
            c.get("student_embeddings", "random"),
            augment=augment,
            seed=int(config.train.seed),
        ),
    )


def _check_options(options: CompressOptions) -> None:
    if options.method not in COMPRESS_METHODS:
        raise ConfigError(
            f"--method: must be one of {', '.join(COMPRESS_METHODS)}, got {options.method!r}"
        )
    if not 0.0 <= options.sparsity < 1.0:
        raise ConfigError(f"--sparsity: must be in [0, 1), got {options.sparsity:g}")
    if options.schedule not in PRUNE_SCHEDULES:
        raise ConfigError(
            f"--schedule: must be one of {', '.join(PRUNE_SCHEDULES)}, got {options.schedule!r}"
        )
    if options.m_by_n:
        from tfllm.compress.pruning import parse_m_by_n  # tfmot only when pruning

        parse_m_by_n(options.m_by_n)
    if options.steps < 0:
        raise ConfigError(f"--steps: must be positive (or 0 for the default), got {options.steps}")
    if options.learning_rate < 0:
        raise ConfigError(f"--learning_rate: must be positive, got {options.learning_rate:g}")
    if not 0 < options.temperature < math.inf:  # nan fails too
        raise ConfigError(
            f"--temperature: must be a positive finite number, got {options.temperature:g}"
        )
    if not 0.0 <= options.alpha <= 1.0:
        raise ConfigError(f"--alpha: must be in [0, 1], got {options.alpha:g}")
    if options.mode not in QUANTIZE_MODES:
        raise ConfigError(f"--mode: must be int8 or int4, got {options.mode!r}")
    for flag in ("augment", "augment_mask", "augment_ngram"):
        value = getattr(options, flag)
        if not 0.0 <= value <= 1.0:  # nan fails too
            raise ConfigError(f"--{flag}: must be in [0, 1], got {value:g}")
    if options.augment and options.method != "distill":
        raise ConfigError(f"--augment: only used with --method=distill, not {options.method}")
    if options.method == "distill" and not (options.student_config or options.student):
        raise ConfigError("--student_config: required with --method=distill")
    if options.method != "distill" and (options.student_config or options.student):
        raise ConfigError(
            f"--student_config: only used with --method=distill, not {options.method}"
        )


def _student_config(
    teacher: ml_collections.ConfigDict,
    source: str,
    path: str,
    given: ml_collections.ConfigDict | None = None,
) -> ml_collections.ConfigDict:
    """The student's config (`given`, else the file `path`), on the teacher's data
    and tokenizer."""
    if given is None:
        given = load_config_file(path)
    path = path or "the student config"
    defaults = base_config().tokenizer
    tokenizer = given.get("tokenizer")
    # A teacher's imported tokenizer (byte-level BPE, WordPiece) is not learned from a
    # vocab_size and model_type, so a student recipe's learning settings name nothing.
    learned = tokenizer_kind(os.path.join(source, "tokenizer")) == "sentencepiece"
    if tokenizer is not None:
        # Keys left at their defaults are inherited; a value that names another
        # tokenizer is a mistake (the student would read different token ids).
        for key in ("model_type", "vocab_size") if learned else ():
            value = tokenizer.get(key, defaults[key])
            if value not in (defaults[key], teacher.tokenizer[key]):
                raise ConfigError(
                    f"--student_config: {path} sets tokenizer.{key}={value!r} but the teacher "
                    f"in {source} uses {teacher.tokenizer[key]!r}; a student must share its "
                    "teacher's tokenizer (drop the tokenizer settings to inherit it)"
                )
        other = tokenizer.get("path", "")
        if other and os.path.realpath(other) != os.path.realpath(source):
            raise ConfigError(
                f"--student_config: {path} names another tokenizer ({other}); a student "
                f"must share its teacher's tokenizer in {source}"
            )
    config = base_config()
    config.update(given)
    config.data = copy.deepcopy(teacher.data)
    config.tokenizer = copy.deepcopy(teacher.tokenizer)
    student, teacher_name = config.model.name, teacher.model.name
    if (teacher_name in LM_NAMES) != (student in LM_NAMES):
        kind = "a language model" if teacher_name in LM_NAMES else "a classifier"
        raise ConfigError(
            f"--student_config: the teacher in {source} is {kind} ({teacher_name}); the student "
            f"{student!r} must be one too"
        )
    if config.model.max_length > teacher.model.max_length:
        raise ConfigError(
            f"--student_config: model.max_length {config.model.max_length} exceeds the teacher's "
            f"{teacher.model.max_length} (the teacher must see the student's inputs)"
        )
    return config


def compress_config(source: str, options: CompressOptions) -> ml_collections.ConfigDict:
    """The output workdir's config: the source's (prune/qat) or the student's (distill)."""
    _check_options(options)
    teacher = load_workdir_config(source)
    if teacher.model.name in ENCODER_NAMES:
        raise ConfigError(
            f"--workdir: {source} holds a {teacher.model.name} encoder, which tfllm-compress "
            "does not compress yet (language models and classifiers only)"
        )
    if not kept_checkpoints(os.path.join(source, "checkpoints")):
        raise WorkdirError(f"--workdir: {source} has no checkpoint (run tfllm-train first)")
    if options.augment and teacher.model.name not in CLASSIFIER_NAMES:
        raise ConfigError(
            f"--augment: augments classifier rows; {source} holds a {teacher.model.name} "
            "language model"
        )
    if options.method == "distill":
        config = _student_config(teacher, source, options.student_config, options.student)
        steps = options.steps or int(config.train.num_steps)
        learning_rate = options.learning_rate or float(config.train.learning_rate)
    else:
        config = copy.deepcopy(teacher)
        source_steps = int(teacher.train.num_steps)
        # Fine-tuning defaults: pruning needs room to recover, QAT only to adapt.
        fraction, lr_scale = (0.5, 0.5) if options.method == "prune" else (0.25, 0.1)
        steps = options.steps or max(50, int(source_steps * fraction))
        learning_rate = options.learning_rate or float(teacher.train.learning_rate) * lr_scale
        config.train.init_from = ""  # the whole model comes from `source` (StartFromSource)
        config.train.freeze_blocks = 0
        config.train.freeze_embeddings = False
        config.train.backbone_lr_scale = 1.0
        config.train.lora_rank = 0  # a LoRA source is merged: the whole model is compressed
    config.tokenizer.path = source
    if options.method != "quantize":  # quantize does not train: the source's settings stay
        config.train.num_steps = int(steps)
        config.train.learning_rate = float(learning_rate)
        config.train.warmup_steps = min(int(config.train.warmup_steps), steps // 10)
    config.compress = ml_collections.ConfigDict(
        dict(
            method=options.method,
            source=os.path.abspath(source),
            sparsity=float(options.sparsity),
            schedule=options.schedule,
            m_by_n=options.m_by_n,
            prune_frequency=int(options.prune_frequency),
            prune_end_fraction=float(base_config().compress.prune_end_fraction),
            prune_embeddings=bool(options.prune_embeddings),
            temperature=float(options.temperature),
            alpha=float(options.alpha),
            student_embeddings=options.student_embeddings,
            augment=float(options.augment),
            augment_mask=float(options.augment_mask),
            augment_ngram=float(options.augment_ngram),
            quantize_mode=options.mode,
        )
    )
    validate(config)
    return config


def check_output(source: str, output: str, config: ml_collections.ConfigDict) -> None:
    """OUT is new, or holds this same compress run (to resume); never the source."""
    if os.path.realpath(source) == os.path.realpath(output):
        raise ConfigError("--output: must differ from --workdir (the source is never modified)")
    if os.path.isfile(os.path.join(output, "config.json")):
        before = load_workdir_config(output).compress.to_dict()
        if before != config.compress.to_dict():
            what = before.get("method") or "a plain training run"
            raise ConfigError(
                f"--output: {output} already holds another run ({what}) with different "
                "settings; use a new --output"
            )


def compress_workdir(source: str, output: str, options: CompressOptions) -> dict:
    """Runs (or resumes) one compression method; returns the compression record."""

    config = compress_config(source, options)
    check_output(source, output, config)
    os.makedirs(output, exist_ok=True)
    labels = os.path.join(source, LABELS_FILE)
    if config.model.name in CLASSIFIER_NAMES and os.path.isfile(labels):
        if not os.path.isfile(os.path.join(output, LABELS_FILE)):
            shutil.copyfile(labels, os.path.join(output, LABELS_FILE))  # same class ids
    if config.compress.method == "quantize":
        metrics = quantize_workdir(source, output, config)
    else:
        metrics = train(config, output, training_plugins(config))
    record = compression_record(source, output, config, metrics)
    atomic_write_json(os.path.join(output, COMPRESSION_FILE), record)
    return record


def compression_record(
    source: str, output: str, config: ml_collections.ConfigDict, metrics: dict
) -> dict:
    """What was done and measured: settings, metrics before/after, sparsity, sizes."""
    import tensorflow_model_optimization as tfmot

    from tfllm.compress.pruning import model_sparsity  # tfmot only when reporting

    before = read_json(os.path.join(source, "metrics.json"))
    record = {
        "method": config.compress.method,
        "source": os.path.abspath(source),
        "output": os.path.abspath(output),
        "settings": config.compress.to_dict(),
        "steps": int(config.train.num_steps),
        "learning_rate": float(config.train.learning_rate),
        "source_metrics": {k: before[k] for k in _REPORTED if k in before},
        "metrics": {k: metrics[k] for k in _REPORTED if k in metrics},
        "versions": {"tensorflow": tf.__version__, "tfmot": tfmot.__version__},
    }
    # Measured on the reloaded checkpoint: what an export will actually ship.
    trained = load_trained(output)
    sparsity = model_sparsity(trained.model)
    record["sparsity"] = sparsity["sparsity"]
    record["sparsity_by_layer"] = {k: v["sparsity"] for k, v in sparsity["layers"].items()}
    record["num_params"] = int(trained.model.count_params())
    if "weight_bytes" in metrics:
        record["weight_bytes"] = metrics["weight_bytes"]
        record["source_weight_bytes"] = metrics["source_weight_bytes"]
    if config.compress.method == "distill":
        record["teacher_params"] = int(load_trained(source).model.count_params())
    return record
