"""Evaluating a workdir: the one library call behind `tfllm-evaluate`, the
pipeline's evaluate stages and the quantizer's report.

A workdir's model is scored on a split of its own data (`train`, `eval`,
`test`) or on a file (`data=`), with the Keras model (optionally sharded over
a strategy) or its exported `.tflite` (`backend="litert"`). Language models
get token loss and perplexity, classifiers the full report (accuracy, per-class
P/R/F1, confusion matrix, ROC-AUC). Recording the result in `metrics.json` is
a separate call (`record_evaluation`), because each caller files it under its
own keys and under its own lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tfllm.config import ENCODER_NAMES
from tfllm.data.classification_data import load_labelled_splits
from tfllm.data.corpus import read_documents
from tfllm.data.instruction_data import encode_pairs, load_pair_splits
from tfllm.data.lm_data import tokenize_documents
from tfllm.data.sources import bad_row_policy, data_fields, lm_token_streams, load_text_splits
from tfllm.data.tokenizer_kinds import chat_template
from tfllm.errors import ConfigError
from tfllm.evaluation.classifier_eval import evaluate_corpus, evaluate_corpus_litert, record_metrics
from tfllm.evaluation.metrics import (
    lm_loss_and_perplexity,
    lm_loss_sharded,
    response_loss_and_perplexity,
)
from tfllm.export.litert import tflite_dir
from tfllm.export.lm_tflite import litert_perplexity
from tfllm.inference.loading import TrainedModel, load_trained
from tfllm.utils.io import atomic_write_json, read_json

BACKENDS = ("keras", "litert")


@dataclass
class Evaluation:
    """What `evaluate_workdir` measured, and where `record_evaluation` files it.

    `keys` maps a metric name to its `metrics.json` key (LMs); `slot` is the
    classifier section (`eval`, `test_split`, `litert_none_eval`, ...).
    """

    trained: TrainedModel
    metrics: dict
    split: str  # the split name or the --data path
    count: int  # tokens (LM) or examples (classifier)
    keys: dict[str, str] = field(default_factory=dict)
    slot: str = ""
    png_path: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.trained.is_classifier


def evaluate_workdir(
    workdir: str | TrainedModel,
    *,
    split: str = "eval",
    data: str | None = None,
    data_format: str | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    batch_size: int | None = None,
    max_batches: int = 0,
    backend: str = "keras",
    quantize: str = "none",
    strategy=None,
    progress=None,
    write_png: bool = True,
) -> Evaluation:
    """Scores the workdir's model (or an already loaded one) on `split` or `data`.

    `batch_size` defaults to the run's `config.train.batch_size`; `strategy`
    shards every batch over its replicas (the metrics equal one device's);
    `progress(total)` makes the object (with `update(rows)`) that reports a sharded
    LM evaluation's windows.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    trained = workdir if isinstance(workdir, TrainedModel) else load_trained(workdir, strategy)
    batch_size = int(batch_size or trained.config.train.batch_size)
    options = _Options(
        split, data, data_format, text_field, label_field, batch_size, max_batches, backend,
        quantize, strategy, progress, write_png,
    )  # fmt: skip
    if trained.is_classifier:
        return _evaluate_classifier(trained, options)
    if trained.config.model.name in ENCODER_NAMES:
        raise ConfigError(
            f"--workdir: {trained.workdir} holds a {trained.config.model.name} encoder, which has "
            "no language-model or classification metric yet (tfllm-evaluate scores LMs and "
            "classifiers)"
        )
    return _evaluate_lm(trained, options)


@dataclass
class _Options:
    split: str
    data: str | None
    data_format: str | None
    text_field: str | None
    label_field: str | None
    batch_size: int
    max_batches: int
    backend: str
    quantize: str
    strategy: object
    progress: object
    write_png: bool


def _evaluate_lm(trained: TrainedModel, o: _Options) -> Evaluation:
    config, tokenizer = trained.config, trained.tokenizer
    if o.split == "test" and not o.data:
        raise ConfigError(
            "--split=test: language models have train and eval splits (or use --data)"
        )
    if o.data:
        fmt, text_field, _ = data_fields(config.data)
        docs = read_documents(
            o.data,
            o.data_format or fmt,
            o.text_field or text_field,
            what="--data",
            **bad_row_policy(config.data),  # the run's on_bad_row / max_row_chars
        ).texts
        ids, prefix = tokenize_documents(tokenizer, docs), "data_"
    elif config.data.get("response_field"):
        return _evaluate_responses(trained, o)
    else:
        train_ids, eval_ids = lm_token_streams(config, tokenizer, load_text_splits(config.data))
        if o.split == "eval":
            if eval_ids is None:
                raise ConfigError(
                    "--split=eval: this run has no eval split (config.data.eval_fraction=0)"
                )
            ids, prefix = eval_ids, "eval_"
        else:
            ids, prefix = train_ids, "train_split_"
    seq_len = int(config.model.max_length)
    if o.backend == "litert":
        result = litert_perplexity(trained, ids, o.quantize, o.max_batches * o.batch_size)
        keys = {
            name: f"litert_{o.quantize}_{prefix}{name}" for name in ("loss", "perplexity", "tokens")
        }
    else:
        if o.strategy is None:
            result = lm_loss_and_perplexity(
                trained.model, ids, seq_len, o.batch_size, o.max_batches
            )
        else:
            progress = o.progress(_windows(len(ids), seq_len, o)) if o.progress else None
            result = lm_loss_sharded(
                trained.model, o.strategy, ids, seq_len, o.batch_size, o.max_batches, progress
            )
        keys = {
            "loss": f"{prefix}loss",
            "perplexity": "perplexity" if prefix == "eval_" else f"{prefix}perplexity",
            "tokens": f"{prefix}tokens",
        }
    return Evaluation(trained, result, o.data or o.split, int(result["tokens"]), keys=keys)


def _evaluate_responses(trained: TrainedModel, o: _Options) -> Evaluation:
    """An instruction-tuned run: response-token perplexity on its eval (or train) pairs,
    formatted as it was trained (Keras backend, one device)."""
    if o.backend != "keras" or o.strategy is not None:
        raise ConfigError(
            "--backend/--strategy: an instruction-tuned run is evaluated on its response "
            "tokens with the Keras backend on one device"
        )
    config = trained.config
    pairs = load_pair_splits(config.data)
    corpus = pairs.eval if o.split == "eval" else pairs.train
    if corpus is None:
        raise ConfigError("--split=eval: this run has no eval split (config.data.eval_fraction=0)")
    template = chat_template(os.path.join(trained.workdir, "tokenizer"))
    encoded = encode_pairs(
        trained.tokenizer, template, corpus.texts, corpus.labels,
        int(config.model.max_length), f"--split={o.split}", corpus.sources,
    )  # fmt: skip
    result = response_loss_and_perplexity(trained.model, encoded, o.batch_size, o.max_batches)
    prefix = "eval_response_" if o.split == "eval" else "train_response_"
    keys = {name: f"{prefix}{name}" for name in ("loss", "perplexity", "tokens")}
    return Evaluation(trained, result, o.split, int(result["tokens"]), keys=keys)


def _windows(tokens: int, seq_len: int, o: _Options) -> int:
    """How many windows the LM evaluation scores (what progress counts to)."""
    windows = (tokens - 1) // seq_len // o.batch_size * o.batch_size
    return min(windows, o.max_batches * o.batch_size) if o.max_batches else windows


def _evaluate_classifier(trained: TrainedModel, o: _Options) -> Evaluation:
    config, workdir = trained.config, trained.workdir
    if o.data:
        fmt, text_field, label_field = data_fields(config.data)
        fmt = o.data_format or fmt
        if fmt == "text":
            raise ConfigError("--format: 'text' files have no labels; use tsv, csv or jsonl")
        corpus = read_documents(
            o.data,
            fmt,
            o.text_field or text_field,
            o.label_field or label_field,
            what="--data",
            **bad_row_policy(config.data),
        )
        name, key = o.data, "data"
    else:
        splits = load_labelled_splits(config.data)
        corpus = {"eval": splits.eval, "train": splits.train, "test": splits.test}[o.split]
        if corpus is None:
            hint = (
                "(set config.data.test_path)"
                if o.split == "test"
                else "(config.data.eval_fraction=0 and no eval_path)"
            )
            raise ConfigError(f"--split={o.split}: this run has no {o.split} split {hint}")
        name, key = o.split, o.split
    what = "--data" if o.data else key
    if o.backend == "litert":
        slot = f"litert_{o.quantize}_{key}"
        png = os.path.join(workdir, f"confusion_matrix_{slot}.png")
        export_dir = tflite_dir(workdir, o.quantize)
        metrics, examples = evaluate_corpus_litert(
            trained, corpus, what, export_dir, batch_size=o.batch_size,
            png_path=png if o.write_png else None,
        )  # fmt: skip
        extra = {"backend": "litert", "quantize": o.quantize, "export": export_dir}
    else:
        slot = {"eval": "eval", "data": "data"}.get(key, f"{key}_split")
        png = os.path.join(
            workdir, "confusion_matrix.png" if key == "eval" else f"confusion_matrix_{key}.png"
        )
        metrics, examples = evaluate_corpus(
            trained,
            corpus,
            what,
            batch_size=o.batch_size,
            png_path=png if o.write_png else None,
            strategy=o.strategy,
        )
        extra = {}
    return Evaluation(trained, metrics, name, examples, slot=slot, png_path=png, extra=extra)


def record_evaluation(evaluation: Evaluation, at_step: int | None = None, **fields) -> str:
    """Files the result in the workdir's `metrics.json` (the layout `tfllm-evaluate`
    writes: LM metrics under their keys, a classifier's report under its slot);
    `fields` go into a classifier's slot too (e.g. `step`). Returns the path.

    `at_step` (an earlier checkpoint, `tfllm-evaluate --step`) files the same
    keys under `by_step[<step>]` instead, so looking back at a run never
    overwrites what its final checkpoint scored.

    The caller holds the workdir lock when a training run may be writing too.
    """
    workdir = evaluation.trained.workdir
    if evaluation.is_classifier and at_step is None:
        return record_metrics(
            workdir,
            evaluation.slot,
            evaluation.metrics,
            source=evaluation.split,
            **evaluation.extra,
            **fields,
        )
    path = os.path.join(workdir, "metrics.json")
    metrics = read_json(path)
    target = (
        metrics
        if at_step is None
        else metrics.setdefault("by_step", {}).setdefault(str(at_step), {})
    )
    if evaluation.is_classifier:
        target[evaluation.slot] = {
            "source": evaluation.split,
            **evaluation.extra,
            **fields,
            **evaluation.metrics,
        }
    else:
        for name, key in evaluation.keys.items():
            target[key] = evaluation.metrics[name]
        target.update(fields)
    atomic_write_json(path, metrics)
    return path
