"""`tfllm-train` as a library call: config → tokenizer → data → trained checkpoint.

The CLI and the pipeline both call `train` (which picks `train_lm` or
`train_classifier` from `config.model.name`), so there is one code path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from tfllm.config import (
    CLASSIFIER_NAMES,
    ENCODER_NAMES,
    PRETRAINED_CLASSIFIERS,
    config_to_json,
    family_keys,
    load_workdir_config,
)
from tfllm.data.classification_data import class_weights, encode_split, load_labelled_splits
from tfllm.data.instruction_data import load_pair_splits
from tfllm.data.labels import LABELS_FILE, LabelVocab
from tfllm.data.lm_data import num_windows
from tfllm.data.sources import ensure_tokenizer, lm_token_streams, load_text_splits
from tfllm.data.tokenizer_kinds import load_tokenizer
from tfllm.distribute.strategy import (
    barrier,
    create_strategy,
    host_copy,
    is_chief,
    is_parameter_server,
    placement,
    takes_sharded_inputs,
)
from tfllm.errors import ConfigError
from tfllm.evaluation.classifier_eval import evaluate_encoded
from tfllm.inference.generate import Generator, generate_text
from tfllm.models import build_model
from tfllm.models.lora import apply_lora, lora_settings, trainable_summary
from tfllm.models.remat import enable_remat
from tfllm.training.instruction import instruction_task
from tfllm.training.plugins import TrainingPlugin
from tfllm.training.pretrained_classifier import (
    adopt_pretrained_architecture,
    check_backbone_tokenizer,
    check_tokenizer_ids,
)
from tfllm.training.tasks import ClassificationTask
from tfllm.training.trainer import LMTrainer, Trainer, check_batch_divisible
from tfllm.utils.io import atomic_write_json, atomic_write_text


def _check_resume_compatible(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to resume a checkpoint with a different model/tokenizer shape."""
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        return
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return
    saved = load_workdir_config(workdir)
    for section in ("model", "tokenizer"):
        for key, value in config[section].items():
            if section == "tokenizer" and key == "path":
                continue
            if saved[section].get(key) != value:
                _cannot_resume(f"{section}.{key}", value, saved[section].get(key), workdir)
    # Keys that change which optimizer slots the checkpoint holds.
    for key, default in _OPTIMIZER_STATE_KEYS.items():
        value, before = config.train.get(key, default), saved.train.get(key, default)
        if key == "backbone_lr_scale":
            value, before = value != 1.0, before != 1.0  # one optimizer or two
        if value != before:
            _cannot_resume(f"train.{key}", config.train.get(key), saved.train.get(key), workdir)


_OPTIMIZER_STATE_KEYS = {
    "optimizer": "adamw",
    "freeze_blocks": 0,
    "freeze_embeddings": False,
    "backbone_lr_scale": 1.0,
    "lora_rank": 0,  # adapters (and their slots) exist or not, of this shape
    "lora_targets": "attention",
    "lora_factorization": "paper",
}


def _cannot_resume(key: str, value: object, saved: object, workdir: str) -> None:
    raise ConfigError(
        f"config.{key}: {value!r} differs from {saved!r} in {workdir}/config.json; the "
        "checkpoints there cannot be resumed with it (use a new --workdir)"
    )


def parameter_metrics(trainer: Trainer) -> dict[str, int]:
    """What a run trains and what its optimizer keeps (LoRA vs full fine-tuning)."""
    state = sum(  # from shapes: no copy of the state itself
        int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size
        for optimizer, _ in trainer.param_groups
        for v in optimizer.variables
    )
    return {**trainable_summary(trainer.model), "optimizer_state_bytes": state}


def report_trainable(config: ml_collections.ConfigDict, trainer: Trainer) -> None:
    """One line on what a LoRA run adapts and trains (nothing for a full run)."""
    lora = lora_settings(config.train)
    if not lora.rank:
        return
    counts = parameter_metrics(trainer)
    share = counts["trainable_params"] / max(1, counts["total_params"])
    print(
        f"LoRA: rank {lora.rank}, alpha {lora.alpha:g} on {','.join(lora.targets)}; training "
        f"{counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"({100 * share:.2f}%: {counts['lora_params']:,} in adapters); optimizer state "
        f"{counts['optimizer_state_bytes'] / 2**20:.2f} MiB",
        flush=True,
    )


def shared_tokenizer(config: ml_collections.ConfigDict, workdir: str, texts, strategy):
    """`ensure_tokenizer`, learned once per cluster: the chief writes W/tokenizer,
    the other workers wait for it and load it (all workers share the workdir)."""

    tokenizer = ensure_tokenizer(config, workdir, texts) if is_chief(strategy) else None
    barrier(strategy)
    if tokenizer is None:
        tokenizer = ensure_tokenizer(config, workdir, texts)
    return tokenizer


def train_lm(
    config: ml_collections.ConfigDict, workdir: str, plugins: Sequence[TrainingPlugin] = ()
) -> dict:
    """Trains (or resumes) the language model described by `config` in `workdir`.

    `plugins` change the step (compression: `tfllm.compress.run.training_plugins`);
    they are passed in from above so training never imports the compressors.
    """

    check_init_from_lm(config)
    _check_resume_compatible(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    strategy = create_strategy(config.runtime)
    check_batch_divisible(config, strategy)  # before any data is read
    if config.data.response_field:  # instruction tuning: prompt/response pairs
        pairs = load_pair_splits(config.data)
        texts = pairs.train.texts + pairs.train.labels
        tokenizer = shared_tokenizer(config, workdir, texts, strategy)
        task = instruction_task(config, workdir, tokenizer, pairs)
        train_ids, eval_ids = task.train.ids, None
    else:
        splits = load_text_splits(config.data)
        tokenizer = shared_tokenizer(config, workdir, splits.train, strategy)
        train_ids, eval_ids = lm_token_streams(config, tokenizer, splits)
        task = None
        print(
            f"Data: {len(train_ids):,} training tokens from {splits.train_source}, "
            f"{0 if eval_ids is None else len(eval_ids):,} eval tokens; "
            f"vocab {tokenizer.vocab_size}; strategy {config.runtime.strategy} "
            f"({strategy.num_replicas_in_sync} replica(s))",
            flush=True,
        )
        _check_eval_split_fits(config, eval_ids)
    if is_chief(strategy):
        atomic_write_text(os.path.join(workdir, "config.json"), config_to_json(config))

    prompts = list(config.train.sample_prompts)
    sample_tokens = int(config.train.sample_tokens)

    def build() -> object:
        model = build_model(config.model, tokenizer.vocab_size)
        apply_lora(model, lora_settings(config.train))
        if config.runtime.remat:
            enable_remat(model)
        return model

    # Samples come from the eager generation loop, which needs host weights.
    host = host_copy(strategy, build)

    def sample_fn(model, step: int) -> list[str]:
        if not prompts or sample_tokens == 0:
            return []
        model = host.of(model) if host is not None else model
        generator = Generator(model, use_xla=False)
        # When a parameter-server worker fails, the coordinator rebuilds the
        # chief's eager context, which drops local resources such as the
        # SentencePiece op's model ("Resource ... SentencepieceOp does not
        # exist"); a tokenizer loaded per sample call is immune (and cheap).
        sample_tokenizer = (
            load_tokenizer(os.path.join(workdir, "tokenizer"))
            if is_parameter_server(strategy)
            else tokenizer
        )
        outs = generate_text(
            generator,
            sample_tokenizer,
            prompts,
            sample_tokens,
            sampler="top_k",
            top_k=40,
            temperature=0.8,
            seed=step,
        )
        return [p + o for p, o in zip(prompts, outs, strict=True)]

    if task is not None:
        trainer = Trainer(
            config, workdir, strategy, build, task, sample_fn=sample_fn, plugins=tuple(plugins)
        )
    else:
        trainer = LMTrainer(
            config,
            workdir,
            strategy,
            build_model=build,
            train_ids=train_ids,
            eval_ids=eval_ids,
            sample_fn=sample_fn,
            plugins=tuple(plugins),
        )
    placed = placement(strategy)
    per_device = placed.parameters_per_device(trainer.model) if placed is not None else None
    if per_device is not None:
        print(f"{placed.describe()}; parameters per device {per_device}", flush=True)
    report_trainable(config, trainer)
    metrics = trainer.train()
    metrics.update(parameter_metrics(trainer))
    metrics["train_tokens"] = int(np.count_nonzero(train_ids) if task else len(train_ids))
    if per_device is not None:
        metrics["parameters_per_device"] = placed.parameters_per_device(trainer.model)
    if is_chief(strategy):
        atomic_write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics


def _check_eval_split_fits(config: ml_collections.ConfigDict, eval_ids) -> None:
    """The first eval must not fail after minutes of training: one line, before step 1.

    The eval pass reads whole global batches of `model.max_length`-token
    windows, so a held-out split shorter than one batch (an imported model's
    2,048-token window on a small file) is refused before any step runs.
    """
    if eval_ids is None:
        return
    seq_len, batch = int(config.model.max_length), int(config.train.batch_size)
    if num_windows(len(eval_ids), seq_len) < batch:
        source = config.data.eval_path or f"data.eval_fraction={config.data.eval_fraction:g}"
        raise ConfigError(
            f"config.data: the eval split ({source}) holds {len(eval_ids):,} tokens, fewer than "
            f"one batch of {batch} windows of {seq_len}+1 tokens ({batch * seq_len + 1:,}); lower "
            "config.model.max_length or config.train.batch_size, or hold out more text"
        )


# Keys an LM fine-tuned from `train.init_from` may change: regularisation, and a
# Llama's window (RoPE has no position table; a GPT's positions are weights).
_FREE_LM_KEYS = {"gpt": ("dropout",), "llama": ("dropout", "max_length", "context_length")}


def check_init_from_lm(config: ml_collections.ConfigDict) -> None:
    """`train.init_from` for an LM: the model must be the one the checkpoint holds.

    The natural command starts from the source's own config
    (`--config=W/config.json --config.train.init_from=W`, an imported
    checkpoint's included); a model that differs would restore nothing, so the
    first differing key is named in one line, before any data is read.
    """
    init_from = config.train.get("init_from")
    if not init_from or config.model.name in CLASSIFIER_NAMES:
        return
    if not os.path.isfile(os.path.join(init_from, "config.json")):
        raise ConfigError(
            f"config.train.init_from: {init_from} has no config.json (a tfllm workdir: a run's "
            "or tfllm-import's)"
        )
    source = load_workdir_config(init_from).model
    free = _FREE_LM_KEYS.get(config.model.name, ("dropout",))
    keys = ("name",) if source.name != config.model.name else family_keys(config.model.name)
    for key in keys:
        if key not in free and config.model.get(key) != source.get(key):
            raise ConfigError(
                f"config.model.{key}: {config.model.get(key)!r} differs from {source.get(key)!r} "
                f"of the model in config.train.init_from={init_from} (start from its config: "
                f"--config={os.path.join(init_from, 'config.json')})"
            )


def train(
    config: ml_collections.ConfigDict, workdir: str, plugins: Sequence[TrainingPlugin] = ()
) -> dict:
    """Trains whatever `config.model.name` names (the library call behind tfllm-train)."""
    if config.model.name in ENCODER_NAMES:
        raise ConfigError(
            f"config.model.name: {config.model.name!r} is an imported encoder, which has no "
            "training task yet (tfllm-train trains language models and classifiers)"
        )
    if config.model.name in CLASSIFIER_NAMES:
        return train_classifier(config, workdir, plugins)
    return train_lm(config, workdir, plugins)


# Architecture keys a fine-tuned transformer_classifier takes from its LM.
_BACKBONE_KEYS = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim")


def adopt_backbone_architecture(config: ml_collections.ConfigDict) -> None:
    """With `train.init_from`, the classifier's backbone shape is the LM's.

    Like keras-hub's `from_preset`, the pretrained model decides its own
    architecture; a recipe need not repeat it. A longer context than the LM
    learned positions for is an error. A classifier on an imported backbone
    (`bert_classifier`) takes it from that workdir instead.
    """
    if config.model.name in PRETRAINED_CLASSIFIERS:
        adopt_pretrained_architecture(config)
        return
    init_from = config.train.init_from
    if not init_from or config.model.name != "transformer_classifier":
        if init_from and config.model.name in CLASSIFIER_NAMES:
            raise ConfigError(
                f"config.train.init_from: only transformer_classifier (from a 'gpt' LM) and "
                f"{', '.join(PRETRAINED_CLASSIFIERS)} can be initialised from another workdir, "
                f"not {config.model.name}"
            )
        return
    lm = load_workdir_config(init_from)
    if lm.model.name != "gpt":
        raise ConfigError(
            f"config.train.init_from: {init_from} holds a {lm.model.name!r} model, not a 'gpt' LM"
        )
    changed = []
    for key in _BACKBONE_KEYS:
        if config.model[key] != lm.model[key]:
            changed.append(f"{key} {config.model[key]}→{lm.model[key]}")
            config.model[key] = lm.model[key]
    if config.model.max_length > lm.model.max_length:
        raise ConfigError(
            f"config.model.max_length: {config.model.max_length} exceeds the "
            f"{lm.model.max_length} positions of the LM in {init_from}"
        )
    if config.train.freeze_blocks > config.model.num_layers:
        raise ConfigError(
            f"config.train.freeze_blocks: {config.train.freeze_blocks} exceeds the LM's "
            f"{config.model.num_layers} blocks"
        )
    if changed:
        print(f"Backbone architecture from {init_from}: {', '.join(changed)}", flush=True)


def train_classifier(
    config: ml_collections.ConfigDict, workdir: str, plugins: Sequence[TrainingPlugin] = ()
) -> dict:
    """Trains (or resumes) a text classifier on labelled rows (`plugins` as `train_lm`)."""

    adopt_backbone_architecture(config)
    check_backbone_tokenizer(config, workdir)
    _check_resume_compatible(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    strategy = create_strategy(config.runtime)
    check_batch_divisible(config, strategy)
    splits = load_labelled_splits(config.data)
    if os.path.isfile(os.path.join(workdir, LABELS_FILE)):
        vocab = LabelVocab.load(workdir)  # resuming: class ids must not move
    else:
        vocab = LabelVocab.learn(splits.train.labels, what=splits.train_source)
    tokenizer = shared_tokenizer(config, workdir, splits.train.texts, strategy)
    check_tokenizer_ids(config, tokenizer)
    max_length = int(config.model.max_length)
    train_split = encode_split(tokenizer, splits.train, vocab, max_length, splits.train_source)
    eval_split = (
        encode_split(tokenizer, splits.eval, vocab, max_length, splits.eval_source)
        if splits.eval is not None
        else None
    )
    per_class = np.bincount(train_split.labels, minlength=vocab.num_classes)
    counts = ", ".join(f"{name} {n}" for name, n in zip(vocab.names, per_class, strict=True))
    print(
        f"Data: {len(train_split):,} training examples from {splits.train_source} ({counts}), "
        f"{0 if eval_split is None else len(eval_split):,} eval examples"
        f"{f' ({splits.eval_source})' if eval_split is not None else ''}; "
        f"mean length {train_split.mean_length:.1f} tokens; vocab {tokenizer.vocab_size}; "
        f"strategy {config.runtime.strategy} ({strategy.num_replicas_in_sync} replica(s))",
        flush=True,
    )
    if is_chief(strategy):
        vocab.save(workdir)
        atomic_write_text(os.path.join(workdir, "config.json"), config_to_json(config))

    weights = None
    if config.train.class_weights == "balanced":
        weights = class_weights(train_split.labels, vocab.num_classes)
    # A tensor-parallel mesh re-batches unbatched rows (DTensorDataset), so every
    # row must have one length: pad to max_length. A row's logits do not depend
    # on its padding, but the batches no longer follow the one-device length
    # buckets (docs/distributed.md).
    static_shapes = (
        bool(config.runtime.jit_compile)
        or config.runtime.strategy == "tpu"
        or int(config.runtime.get("tensor_parallel", 1)) > 1
    )
    task = ClassificationTask(
        train_split,
        eval_split,
        vocab.num_classes,
        max_length,
        weights=weights,
        static_shapes=static_shapes,
        eval_batches=int(config.train.eval_batches),
    )

    def build() -> object:
        model = build_model(config.model, tokenizer.vocab_size, vocab.num_classes)
        if hasattr(model, "freeze_backbone"):
            model.freeze_backbone(
                int(config.train.freeze_blocks), bool(config.train.freeze_embeddings)
            )
        apply_lora(model, lora_settings(config.train))
        if config.runtime.remat:
            enable_remat(model)
        return model

    trainer = Trainer(
        config, workdir, strategy, build_model=build, task=task, plugins=tuple(plugins)
    )
    report_trainable(config, trainer)
    metrics = trainer.train()
    metrics.update(parameter_metrics(trainer))
    metrics["train_examples"] = len(train_split)
    if eval_split is not None:
        # The full report (per class, confusion matrix, ROC-AUC) once, at the end.
        full = evaluate_encoded(
            trainer.model,
            eval_split,
            vocab,
            batch_size=int(config.train.batch_size),
            max_length=max_length,
            png_path=os.path.join(workdir, "confusion_matrix.png") if is_chief(strategy) else None,
            strategy=strategy if takes_sharded_inputs(strategy) else None,  # DTensor inputs
        )
        metrics.update({("eval_loss" if k == "log_loss" else k): v for k, v in full.items()})
    if is_chief(strategy):
        atomic_write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
