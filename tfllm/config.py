"""The config schema: defaults, validation, and loading from a workdir.

A config is one `ml_collections.ConfigDict` with the sections of DESIGN §4:
`data`, `tokenizer`, `model`, `train` (the task) and `runtime`, `export` (how
and where it runs), following TF Model Garden's split of task vs runtime
settings. Config files are Python and therefore trusted input.

Every value is validated before any work starts, so a typo fails in a second
with one line naming the key, instead of an hour into training.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ml_collections

from tfllm.errors import ConfigError

MODEL_NAMES = ("gpt", "transformer_classifier", "cnn_classifier", "mlp_classifier")
CLASSIFIER_NAMES = MODEL_NAMES[1:]
POOLINGS = ("mean", "cls", "last")
CNN_POOLINGS = ("global_max", "max_pool_flatten")
CLASS_WEIGHTS = ("none", "balanced")
COLLECTIVES = ("auto", "ring", "nccl")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server")
COMPRESS_METHODS = ("prune", "qat", "distill", "quantize")
PRUNE_SCHEDULES = ("polynomial", "constant")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adam", "adamw", "adamax")
LR_SCHEDULES = ("constant", "cosine", "linear", "inverse_sqrt", "step")
DATA_FORMATS = ("text", "tsv", "csv", "jsonl")
BAD_ROW_POLICIES = ("skip", "fail")
BUNDLED_DATASETS = ("shakespeare", "sst2")
TOKENIZER_MODEL_TYPES = ("bpe", "unigram")
SAMPLERS = ("greedy", "temperature", "top_k", "top_p")


def base_config() -> ml_collections.ConfigDict:
    """Every key with its default; recipe files in configs/ start from this."""
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict(
        dict(
            dataset="shakespeare",  # bundled set used when train_path is empty
            train_path="",  # file, glob, or comma-separated list (.gz read transparently)
            eval_path="",  # empty: hold out eval_fraction of the training data
            test_path="",  # optional held-out test file (classifiers: tfllm-evaluate --split=test)
            format="text",
            text_field="text",
            label_field="label",
            eval_fraction=0.1,
            on_bad_row="skip",  # tsv/csv/jsonl rows that are unusable: skip (warn) or fail
            max_row_chars=100_000,  # longest text a tsv/csv/jsonl row may have
        )
    )
    config.tokenizer = ml_collections.ConfigDict(
        dict(
            path="",  # an existing tokenizer dir (or a workdir); empty: learn one
            model_type="bpe",
            vocab_size=1024,
        )
    )
    config.model = ml_collections.ConfigDict(
        dict(
            name="gpt",
            max_length=128,
            num_layers=4,
            num_heads=4,
            hidden_dim=128,
            intermediate_dim=512,
            dropout=0.1,
            # transformer_classifier
            pooling="mean",  # mean | cls (the bos token) | last (last real token)
            causal=False,  # keep the causal mask (e.g. when fine-tuning a GPT)
            # cnn_classifier / mlp_classifier
            embedding_dim=128,
            conv_widths=(3, 4, 5),  # tuples: overridable as --config.model.conv_widths="(3, 4)"
            conv_filters=100,
            cnn_pooling="global_max",  # global_max (Kim 2014) | max_pool_flatten
            pool_size=2,  # max_pool_flatten only
            mlp_hidden_dims=(256, 256),
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            num_steps=1000,
            batch_size=32,  # global, split over replicas
            optimizer="adamw",
            learning_rate=1e-3,
            lr_schedule="cosine",
            warmup_steps=100,
            min_lr_ratio=0.1,  # final LR = learning_rate * min_lr_ratio (cosine, linear)
            lr_step_every=1000,  # step schedule: multiply the LR by lr_step_gamma every N steps
            lr_step_gamma=0.5,
            weight_decay=0.1,
            beta_1=0.9,
            beta_2=0.95,
            momentum=0.9,  # sgd only
            grad_clip_norm=1.0,  # global-norm clipping; 0 disables
            grad_accum_steps=1,  # split each batch into N micro-batches (same math, less memory)
            early_stopping_patience=0,  # stop after N evals without a better eval loss; 0 = off
            early_stopping_min_delta=0.0,
            steps_per_loop=50,  # steps inside one tf.function call (keeps TPUs fed)
            eval_every=250,
            eval_batches=20,  # 0 = the whole eval split
            checkpoint_every=250,
            max_checkpoints=3,
            seed=0,
            init_from="",  # a workdir whose checkpoint initialises the model
            # classifiers fine-tuned from an LM (init_from)
            freeze_blocks=0,  # keep the first N transformer blocks fixed
            freeze_embeddings=False,
            backbone_lr_scale=1.0,  # backbone learning rate = learning_rate * this
            class_weights="none",  # none | balanced (weight ~ 1 / class frequency)
            sample_prompts=["ROMEO:", "To be, or not"],
            sample_tokens=48,
            weight_histograms=False,  # TensorBoard histograms of every weight at each eval
        )
    )
    config.runtime = ml_collections.ConfigDict(
        dict(
            strategy="default",
            logical_cpus=0,  # >1: split the host CPU into N logical devices
            precision="float32",
            jit_compile=False,
            tpu="",  # TPU name/address for strategy=tpu
            collective="auto",  # multi_worker all-reduce: auto | ring | nccl
            ps_shard_min_bytes=256 << 10,  # parameter_server: shard variables this large
            intra_op_threads=0,  # threads inside one op; 0 = TensorFlow's choice
            inter_op_threads=0,  # ops run at once; 0 = TensorFlow's choice
            profile_steps=(),  # (start, stop): trace steps start+1..stop (TensorBoard Profile)
            tensor_parallel=1,
            pipeline_stages=1,
            num_microbatches=1,
        )
    )
    config.export = ml_collections.ConfigDict(
        dict(
            max_new_tokens=64,  # serving_default generates this many tokens per prompt
            verify_prompts=["ROMEO:", "First Citizen:", ""],
            # TFLite LMs: extra prefill signatures for prompts up to these lengths
            # (a `prefill` for the whole context always exists; see docs/edge.md).
            prefill_buckets=(32,),
        )
    )
    # Set by tfllm-compress (docs/compression.md); a plain training run leaves method empty.
    config.compress = ml_collections.ConfigDict(
        dict(
            method="",  # "" | prune | qat | distill | quantize
            source="",  # the workdir being compressed (prune/qat start from it; distill's teacher)
            sparsity=0.8,  # prune: final fraction of zeros in every kernel
            schedule="polynomial",  # prune: polynomial (0 -> sparsity) | constant
            m_by_n="",  # prune: e.g. "2:4" = 2 zeros in every 4 weights (structured)
            prune_frequency=0,  # prune: update masks every N steps; 0 = 1/10 of the ramp
            prune_end_fraction=0.75,  # prune: the ramp ends here; the rest fine-tunes
            prune_embeddings=True,  # prune: include Embedding tables (the GPT's tied LM head)
            temperature=2.0,  # distill: softmax temperature T
            alpha=0.5,  # distill: weight of the hard-label loss
            quantize_mode="int8",  # quantize: Keras 3 weight-only int8 | int4
        )
    )
    return config


@dataclass(frozen=True)
class _Rule:
    key: str
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    requirement: str = ""


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _one_of(options: Sequence[str]) -> Callable[[Any], bool]:
    return lambda v: v in options


def _fraction(v: Any) -> bool:
    return 0.0 <= v < 1.0


_RULES: tuple[_Rule, ...] = (
    _Rule(
        "data.dataset",
        str,
        lambda v: v == "" or v in BUNDLED_DATASETS,
        f"one of {', '.join(BUNDLED_DATASETS)} (or empty with data.train_path set)",
    ),
    _Rule("data.train_path", str),
    _Rule("data.eval_path", str),
    _Rule("data.test_path", str),
    _Rule("data.format", str, _one_of(DATA_FORMATS), f"one of {', '.join(DATA_FORMATS)}"),
    _Rule("data.text_field", str, bool, "a non-empty field name"),
    _Rule("data.label_field", str),
    _Rule("data.eval_fraction", (int, float), _fraction, "in [0, 1)"),
    _Rule(
        "data.on_bad_row",
        str,
        _one_of(BAD_ROW_POLICIES),
        f"one of {', '.join(BAD_ROW_POLICIES)}",
    ),
    _Rule("data.max_row_chars", int, _positive, "a positive integer"),
    _Rule("tokenizer.path", str),
    _Rule(
        "tokenizer.model_type",
        str,
        _one_of(TOKENIZER_MODEL_TYPES),
        f"one of {', '.join(TOKENIZER_MODEL_TYPES)}",
    ),
    _Rule(
        "tokenizer.vocab_size",
        int,
        lambda v: 260 <= v <= 1_000_000,
        "an integer in [260, 1000000] (byte fallback needs 256 byte pieces + 4 specials)",
    ),
    _Rule("model.name", str, _one_of(MODEL_NAMES), f"one of {', '.join(MODEL_NAMES)}"),
    _Rule("model.max_length", int, lambda v: 2 <= v <= 65536, "an integer in [2, 65536]"),
    _Rule("model.num_layers", int, _positive, "a positive integer"),
    _Rule("model.num_heads", int, _positive, "a positive integer"),
    _Rule("model.hidden_dim", int, _positive, "a positive integer"),
    _Rule("model.intermediate_dim", int, _positive, "a positive integer"),
    _Rule("model.dropout", (int, float), _fraction, "in [0, 1)"),
    _Rule("model.pooling", str, _one_of(POOLINGS), f"one of {', '.join(POOLINGS)}"),
    _Rule("model.causal", bool),
    _Rule("model.embedding_dim", int, _positive, "a positive integer"),
    _Rule(
        "model.conv_widths",
        (list, tuple),
        lambda v: bool(v) and all(isinstance(w, int) and w > 0 for w in v),
        "a non-empty list of positive integers",
    ),
    _Rule("model.conv_filters", int, _positive, "a positive integer"),
    _Rule("model.cnn_pooling", str, _one_of(CNN_POOLINGS), f"one of {', '.join(CNN_POOLINGS)}"),
    _Rule("model.pool_size", int, _positive, "a positive integer"),
    _Rule(
        "model.mlp_hidden_dims",
        (list, tuple),
        lambda v: all(isinstance(w, int) and w > 0 for w in v),
        "a list of positive integers",
    ),
    _Rule("train.num_steps", int, _positive, "a positive integer"),
    _Rule("train.batch_size", int, _positive, "a positive integer"),
    _Rule("train.optimizer", str, _one_of(OPTIMIZERS), f"one of {', '.join(OPTIMIZERS)}"),
    _Rule(
        "train.learning_rate",
        (int, float),
        lambda v: 0 < v < 10 and math.isfinite(v),
        "a number in (0, 10)",
    ),
    _Rule("train.lr_schedule", str, _one_of(LR_SCHEDULES), f"one of {', '.join(LR_SCHEDULES)}"),
    _Rule("train.warmup_steps", int, _non_negative, "a non-negative integer"),
    _Rule("train.min_lr_ratio", (int, float), lambda v: 0 <= v <= 1, "in [0, 1]"),
    _Rule("train.weight_decay", (int, float), _non_negative, "a non-negative number"),
    _Rule("train.beta_1", (int, float), _fraction, "in [0, 1)"),
    _Rule("train.beta_2", (int, float), _fraction, "in [0, 1)"),
    _Rule("train.momentum", (int, float), _fraction, "in [0, 1)"),
    _Rule("train.grad_clip_norm", (int, float), _non_negative, "a non-negative number (0 = off)"),
    _Rule("train.grad_accum_steps", int, _positive, "a positive integer"),
    _Rule("train.lr_step_every", int, _positive, "a positive integer"),
    _Rule("train.lr_step_gamma", (int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    _Rule("train.early_stopping_patience", int, _non_negative, "a non-negative integer (0 = off)"),
    _Rule("train.early_stopping_min_delta", (int, float), _non_negative, "a non-negative number"),
    _Rule("train.steps_per_loop", int, _positive, "a positive integer"),
    _Rule("train.eval_every", int, _positive, "a positive integer"),
    _Rule("train.eval_batches", int, _non_negative, "a non-negative integer (0 = all)"),
    _Rule("train.checkpoint_every", int, _positive, "a positive integer"),
    _Rule("train.max_checkpoints", int, _positive, "a positive integer"),
    _Rule("train.seed", int, _non_negative, "a non-negative integer"),
    _Rule("train.init_from", str),
    _Rule("train.freeze_blocks", int, _non_negative, "a non-negative integer"),
    _Rule("train.freeze_embeddings", bool),
    _Rule("train.backbone_lr_scale", (int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    _Rule("train.class_weights", str, _one_of(CLASS_WEIGHTS), f"one of {', '.join(CLASS_WEIGHTS)}"),
    _Rule("train.sample_tokens", int, _non_negative, "a non-negative integer"),
    _Rule("train.weight_histograms", bool),
    _Rule("runtime.strategy", str, _one_of(STRATEGIES), f"one of {', '.join(STRATEGIES)}"),
    _Rule("runtime.logical_cpus", int, _non_negative, "a non-negative integer"),
    _Rule("runtime.precision", str, _one_of(PRECISIONS), f"one of {', '.join(PRECISIONS)}"),
    _Rule("runtime.jit_compile", bool),
    _Rule("runtime.tpu", str),
    _Rule("runtime.collective", str, _one_of(COLLECTIVES), f"one of {', '.join(COLLECTIVES)}"),
    _Rule("runtime.ps_shard_min_bytes", int, _positive, "a positive integer"),
    _Rule("runtime.intra_op_threads", int, _non_negative, "a non-negative integer"),
    _Rule("runtime.inter_op_threads", int, _non_negative, "a non-negative integer"),
    _Rule(
        "runtime.profile_steps",
        (list, tuple),
        lambda v: (
            len(v) == 0
            or (
                len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                and 0 <= v[0] < v[1]
            )
        ),
        "[] (off) or [start, stop] with 0 <= start < stop",
    ),
    _Rule("runtime.tensor_parallel", int, _positive, "a positive integer (1 = off)"),
    _Rule("runtime.pipeline_stages", int, _positive, "a positive integer (1 = off)"),
    _Rule("runtime.num_microbatches", int, _positive, "a positive integer"),
    _Rule("export.max_new_tokens", int, _positive, "a positive integer"),
    _Rule(
        "compress.method",
        str,
        _one_of(("", *COMPRESS_METHODS)),
        f"empty or one of {', '.join(COMPRESS_METHODS)}",
    ),
    _Rule("compress.source", str),
    _Rule("compress.sparsity", (int, float), _fraction, "in [0, 1)"),
    _Rule("compress.schedule", str, _one_of(PRUNE_SCHEDULES), "polynomial or constant"),
    _Rule("compress.m_by_n", str),
    _Rule("compress.prune_frequency", int, _non_negative, "a non-negative integer (0 = auto)"),
    _Rule("compress.prune_end_fraction", (int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    _Rule("compress.prune_embeddings", bool),
    _Rule("compress.temperature", (int, float), _positive, "a positive number"),
    _Rule("compress.alpha", (int, float), lambda v: 0 <= v <= 1, "in [0, 1]"),
    _Rule("compress.quantize_mode", str, _one_of(("int8", "int4")), "int8 or int4"),
    _Rule(
        "export.prefill_buckets",
        (list, tuple),
        lambda v: all(isinstance(w, int) and w > 0 for w in v),
        "a tuple of positive integers",
    ),
)


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            raise ConfigError(f"config.{dotted}: missing (add it to your config file)")
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every known key's type and range; raises ConfigError on the first problem."""
    for rule in _RULES:
        value = _lookup(config, rule.key)
        kind = rule.kind
        # bool is an int subclass in Python: never accept it where a number is wanted.
        is_bool = isinstance(value, bool)
        if (is_bool and kind is not bool) or not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else "a number"
            raise ConfigError(
                f"config.{rule.key}: expected {want}, got {type(value).__name__} {value!r}"
            )
        if rule.check is not None and not rule.check(value):
            raise ConfigError(f"config.{rule.key}: must be {rule.requirement}, got {value!r}")
    _validate_relations(config)


def _validate_relations(config: ml_collections.ConfigDict) -> None:
    model, train, runtime, data = config.model, config.train, config.runtime, config.data
    if model.hidden_dim % model.num_heads:
        raise ConfigError(
            f"config.model.hidden_dim: {model.hidden_dim} is not divisible by "
            f"config.model.num_heads={model.num_heads}"
        )
    if not data.train_path and not data.dataset:
        raise ConfigError("config.data.train_path: empty, and no bundled config.data.dataset set")
    if train.warmup_steps > train.num_steps:
        raise ConfigError(
            f"config.train.warmup_steps: {train.warmup_steps} exceeds "
            f"config.train.num_steps={train.num_steps}"
        )
    if runtime.profile_steps and runtime.profile_steps[1] > train.num_steps:
        raise ConfigError(
            f"config.runtime.profile_steps: stop {runtime.profile_steps[1]} is past "
            f"config.train.num_steps={train.num_steps}"
        )
    if runtime.logical_cpus > 1 and runtime.strategy not in ("mirrored", "default"):
        raise ConfigError(
            "config.runtime.logical_cpus: only meaningful with strategy 'mirrored', "
            f"got strategy {runtime.strategy!r}"
        )
    if train.batch_size % train.grad_accum_steps:
        raise ConfigError(
            f"config.train.grad_accum_steps: {train.grad_accum_steps} does not divide "
            f"config.train.batch_size={train.batch_size}"
        )
    if model.name in CLASSIFIER_NAMES:
        if not data.label_field:
            raise ConfigError(f"config.data.label_field: empty, but {model.name} needs labels")
        if not data.train_path and data.dataset == "shakespeare":
            raise ConfigError(
                f"config.data.dataset: 'shakespeare' has no labels for {model.name} "
                "(use 'sst2' or set config.data.train_path to a labelled tsv/csv/jsonl file)"
            )
        if data.train_path and data.format == "text":
            raise ConfigError(
                f"config.data.format: 'text' files have no labels for {model.name} "
                "(use tsv, csv or jsonl)"
            )
        if model.name == "cnn_classifier" and model.cnn_pooling == "max_pool_flatten":
            if len(model.conv_widths) != 1:
                raise ConfigError(
                    "config.model.conv_widths: cnn_pooling 'max_pool_flatten' uses one Conv1D, "
                    f"give exactly one width, got {list(model.conv_widths)}"
                )
        if model.name == "transformer_classifier" and train.freeze_blocks > model.num_layers:
            raise ConfigError(
                f"config.train.freeze_blocks: {train.freeze_blocks} exceeds "
                f"config.model.num_layers={model.num_layers}"
            )
    _validate_tensor_parallel(config)
    _validate_pipeline(config)


def _validate_tensor_parallel(config: ml_collections.ConfigDict) -> None:
    """Tensor parallelism splits heads and FFN units evenly, on a DTensor mesh.

    Only the transformer models have the Megatron blocks it splits (the GPT
    and the transformer classifier, which shares the GPT's block layers).
    """
    model, runtime = config.model, config.runtime
    n = runtime.tensor_parallel
    if n == 1:
        return
    if model.name not in ("gpt", "transformer_classifier"):
        raise ConfigError(
            f"config.runtime.tensor_parallel: {n} is implemented for models 'gpt' and "
            f"'transformer_classifier' only, got config.model.name={model.name!r}"
        )
    for key in ("num_heads", "intermediate_dim"):
        if model[key] % n:
            raise ConfigError(
                f"config.runtime.tensor_parallel: {n} does not divide "
                f"config.model.{key}={model[key]}"
            )
    if runtime.strategy != "default":
        raise ConfigError(
            f"config.runtime.tensor_parallel: {n} runs on its own DTensor mesh (data parallel "
            f"on its batch axis); set strategy 'default', got {runtime.strategy!r}"
        )
    if runtime.jit_compile:
        raise ConfigError(
            f"config.runtime.jit_compile: not supported with tensor_parallel={n} "
            "(DTensor programs are not XLA-compiled here)"
        )
    if runtime.pipeline_stages > 1:
        raise ConfigError(
            f"config.runtime.pipeline_stages: {runtime.pipeline_stages} cannot be combined "
            f"with tensor_parallel={n}"
        )
    if config.train.optimizer not in ("adam", "adamw"):
        raise ConfigError(
            f"config.train.optimizer: {config.train.optimizer!r} is not supported with "
            f"tensor_parallel={n} (use adamw or adam; see docs/distributed.md)"
        )
    method = config.get("compress", {}).get("method", "")
    if method:
        raise ConfigError(
            f"config.compress.method: {method!r} does not run under tensor_parallel={n}"
        )


def _validate_pipeline(config: ml_collections.ConfigDict) -> None:
    """GPipe splits the GPT's blocks over K devices and each batch into M micro-batches.

    Micro-batches compose with `train.grad_accum_steps` (each accumulation step
    is one pipelined batch of M micro-batches), so the batch must split into
    both. Tensor parallelism is refused in `_validate_tensor_parallel`.
    """
    model, runtime, train = config.model, config.runtime, config.train
    k, m = runtime.pipeline_stages, runtime.num_microbatches
    if k == 1:
        if m != 1:
            raise ConfigError(
                f"config.runtime.num_microbatches: {m} needs config.runtime.pipeline_stages > 1 "
                "(to split a batch on one device use config.train.grad_accum_steps)"
            )
        return
    if model.name != "gpt":
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} is implemented for model 'gpt' only, "
            f"got config.model.name={model.name!r}"
        )
    if k > model.num_layers:
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} stages exceed "
            f"config.model.num_layers={model.num_layers} (each stage needs a block)"
        )
    if runtime.strategy != "default":
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} places its stages on devices itself; set "
            f"strategy 'default', got {runtime.strategy!r}"
        )
    if runtime.jit_compile:
        # Measured (TF 2.21): "Trying to access resource ... located in device
        # CPU:1 from device CPU:0" — an XLA cluster runs on one device.
        raise ConfigError(
            f"config.runtime.jit_compile: not supported with pipeline_stages={k} (XLA compiles "
            "the step for one device; the stages' variables live on several)"
        )
    per_step = train.batch_size // train.grad_accum_steps
    if per_step % m:
        accum = (
            f" (config.train.batch_size={train.batch_size} / "
            f"grad_accum_steps={train.grad_accum_steps})"
            if train.grad_accum_steps > 1
            else ""
        )
        raise ConfigError(
            f"config.runtime.num_microbatches: {m} does not divide the per-replica batch "
            f"{per_step}{accum}"
        )
    method = config.get("compress", {}).get("method", "")
    if method:
        raise ConfigError(
            f"config.compress.method: {method!r} does not run under pipeline_stages={k}"
        )


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Loads a config file outside absl flags (the pipeline uses this)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such file: {path}")
    spec = importlib.util.spec_from_file_location("tfllm_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config: {path} defines no get_config()")
    return module.get_config()


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a ConfigDict saved by `config_to_json` (lists stay lists)."""
    return ml_collections.ConfigDict(json.loads(text))


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (`W/config.json`)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"--workdir: {workdir} has no config.json (train there first, or pass --config)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = config_from_json(f.read())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable config ({e})") from None
    merged = base_config()
    merged.update(config)  # keys added to the schema since the run get their defaults
    return merged
