"""Schemas of the task and runtime sections: data, tokenizer, train, runtime, export, compress.

Each dataclass is one `config.<section>`; field order is the order `validate`
checks keys in (the first problem is the one reported). The comments are the
keys' documentation; docs/configuration.md explains them at length. The
`model` section has one schema per model family, in `tfllm.config.model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tfllm.config.fields import (
    Check,
    fraction,
    interval,
    non_empty,
    non_negative,
    one_of,
    positive,
    positive_ints,
    setting,
)
from tfllm.config.names import (
    BAD_ROW_POLICIES,
    BUNDLED_DATASETS,
    CLASS_WEIGHTS,
    COLLECTIVES,
    COMPRESS_METHODS,
    DATA_FORMATS,
    LORA_FACTORIZATIONS,
    LORA_TARGET_GROUPS,
    LORA_TARGETS,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    PRUNE_SCHEDULES,
    QUANTIZE_MODES,
    STRATEGIES,
    TOKENIZER_MODEL_TYPES,
)


@dataclass(frozen=True)
class DataConfig:
    """`config.data`: where the text comes from and how rows are read."""

    dataset: str = setting(  # bundled set used when train_path is empty
        "shakespeare",
        one_of(
            ("", *BUNDLED_DATASETS),
            f"one of {', '.join(BUNDLED_DATASETS)} (or empty with data.train_path set)",
        ),
    )
    train_path: str = setting("")  # file, glob, or comma-separated list (.gz read transparently)
    eval_path: str = setting("")  # empty: hold out eval_fraction of the training data
    test_path: str = setting("")  # optional held-out test file (tfllm-evaluate --split=test)
    format: str = setting("text", one_of(DATA_FORMATS))
    text_field: str = setting("text", non_empty("field name"))
    label_field: str = setting("label")
    # Instruction tuning (LMs): the tsv/csv/jsonl field holding each row's response; the
    # prompt is text_field's, and the loss covers response tokens only. Empty: plain text.
    response_field: str = setting("")
    eval_fraction: float = setting(0.1, fraction())
    on_bad_row: str = setting("skip", one_of(BAD_ROW_POLICIES))  # unusable tsv/csv/jsonl rows
    max_row_chars: int = setting(100_000, positive())  # longest text a tsv/csv/jsonl row may have


@dataclass(frozen=True)
class TokenizerConfig:
    """`config.tokenizer`: an existing SentencePiece model, or how to learn one."""

    path: str = setting("")  # an existing tokenizer dir (or a workdir); empty: learn one
    model_type: str = setting("bpe", one_of(TOKENIZER_MODEL_TYPES))
    vocab_size: int = setting(
        1024, interval(260, 1_000_000, note="byte fallback needs 256 byte pieces + 4 specials")
    )


def _lora_targets_ok(v: str) -> bool:
    names = [name.strip() for name in v.split(",")]
    return all(name in LORA_TARGETS for name in names)


@dataclass(frozen=True)
class TrainConfig:
    """`config.train`: the optimisation, its schedule, and when to eval/checkpoint."""

    num_steps: int = setting(1000, positive())
    batch_size: int = setting(32, positive())  # global, split over replicas
    optimizer: str = setting("adamw", one_of(OPTIMIZERS))
    learning_rate: float = setting(
        1e-3, interval(0, 10, lo_open=True, hi_open=True, requirement="a number in (0, 10)")
    )
    lr_schedule: str = setting("cosine", one_of(LR_SCHEDULES))
    warmup_steps: int = setting(100, non_negative())
    min_lr_ratio: float = setting(0.1, interval(0, 1))  # final LR = learning_rate * this
    weight_decay: float = setting(0.1, non_negative())
    beta_1: float = setting(0.9, fraction())
    beta_2: float = setting(0.95, fraction())
    momentum: float = setting(0.9, fraction())  # sgd only
    grad_clip_norm: float = setting(1.0, non_negative("0 = off"))  # global-norm clipping
    grad_accum_steps: int = setting(1, positive())  # N micro-batches per batch (less memory)
    lr_step_every: int = setting(1000, positive())  # step schedule: LR *= lr_step_gamma every N
    lr_step_gamma: float = setting(0.5, interval(0, 1, lo_open=True))
    # Stop after N evals without a better eval loss; 0 = off.
    early_stopping_patience: int = setting(0, non_negative("0 = off"))
    early_stopping_min_delta: float = setting(0.0, non_negative())
    steps_per_loop: int = setting(50, positive())  # steps inside one tf.function (feeds TPUs)
    eval_every: int = setting(250, positive())
    eval_batches: int = setting(20, non_negative("0 = all"))  # 0 = the whole eval split
    checkpoint_every: int = setting(250, positive())
    max_checkpoints: int = setting(3, positive())
    seed: int = setting(0, non_negative())
    init_from: str = setting("")  # a workdir whose checkpoint initialises the model
    # Classifiers fine-tuned from an LM (init_from):
    freeze_blocks: int = setting(0, non_negative())  # keep the first N transformer blocks fixed
    freeze_embeddings: bool = setting(False)
    backbone_lr_scale: float = setting(1.0, interval(0, 1, lo_open=True))  # x learning_rate
    class_weights: str = setting("none", one_of(CLASS_WEIGHTS))  # balanced: ~ 1 / frequency
    # LoRA (docs/finetuning.md): adapters of this rank on the target kernels, base frozen.
    lora_rank: int = setting(0, interval(0, 4096, note="0 = off"))
    lora_alpha: float = setting(0.0, non_negative("0 = lora_rank, a scale of 1"))  # x A.B/rank
    lora_targets: str = setting(  # comma-separated groups or layer names
        "attention",
        Check(
            _lora_targets_ok,
            f"a comma-separated list of {', '.join(LORA_TARGET_GROUPS)} or layer names "
            f"({', '.join(LORA_TARGETS[len(LORA_TARGET_GROUPS) :])})",
        ),
    )
    # paper: A [inputs, r]·B [r, outputs] on every kernel (Hu et al.); keras: Keras'
    # enable_lora, which factors only a kernel's last axis (per-head q/k/v adapters).
    lora_factorization: str = setting("paper", one_of(LORA_FACTORIZATIONS))
    sample_prompts: list[str] = setting(["ROMEO:", "To be, or not"], validated=False)
    sample_tokens: int = setting(48, non_negative())
    weight_histograms: bool = setting(False)  # TensorBoard histograms of every weight per eval


def _profile_window(v: Any) -> bool:
    return len(v) == 0 or (
        len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and 0 <= v[0] < v[1]
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """`config.runtime`: where and how it runs (strategy, precision, parallelism)."""

    strategy: str = setting("default", one_of(STRATEGIES))
    logical_cpus: int = setting(0, non_negative())  # >1: split the host CPU into N devices
    precision: str = setting("float32", one_of(PRECISIONS))
    jit_compile: bool = setting(False)
    # Recompute each transformer block's activations in the backward pass (gradient
    # checkpointing, tfllm.models.remat): less memory for about one more forward pass.
    remat: bool = setting(False)
    tpu: str = setting("")  # TPU name/address for strategy=tpu
    collective: str = setting("auto", one_of(COLLECTIVES))  # multi_worker all-reduce
    ps_shard_min_bytes: int = setting(256 << 10, positive())  # parameter_server: shard these
    intra_op_threads: int = setting(0, non_negative())  # threads inside one op; 0 = TF's choice
    inter_op_threads: int = setting(0, non_negative())  # ops run at once; 0 = TF's choice
    # (start, stop): trace steps start+1..stop (TensorBoard Profile).
    profile_steps: tuple[int, ...] = setting(
        (), Check(_profile_window, "[] (off) or [start, stop] with 0 <= start < stop")
    )
    tensor_parallel: int = setting(1, positive("1 = off"))
    pipeline_stages: int = setting(1, positive("1 = off"))
    num_microbatches: int = setting(1, positive())


@dataclass(frozen=True)
class ExportConfig:
    """`config.export`: what the exported serving signatures do, and how they are verified."""

    max_new_tokens: int = setting(64, positive())  # serving_default generates this many tokens
    verify_prompts: list[str] = setting(["ROMEO:", "First Citizen:", ""], validated=False)
    # TFLite LMs: extra prefill signatures for prompts up to these lengths
    # (a `prefill` for the whole context always exists; see docs/edge.md).
    prefill_buckets: tuple[int, ...] = setting((32,), positive_ints("a tuple of positive integers"))


@dataclass(frozen=True)
class CompressConfig:
    """`config.compress`: set by tfllm-compress; a plain training run leaves method empty."""

    method: str = setting(
        "", one_of(("", *COMPRESS_METHODS), f"empty or one of {', '.join(COMPRESS_METHODS)}")
    )
    source: str = setting("")  # the workdir being compressed (distill: the teacher)
    sparsity: float = setting(0.8, fraction())  # prune: final fraction of zeros in every kernel
    schedule: str = setting(  # prune: polynomial (0 -> sparsity) | constant
        "polynomial", one_of(PRUNE_SCHEDULES, "polynomial or constant")
    )
    m_by_n: str = setting("")  # prune: e.g. "2:4" = 2 zeros in every 4 weights (structured)
    prune_frequency: int = setting(0, non_negative("0 = auto"))  # masks every N steps
    prune_end_fraction: float = setting(0.75, interval(0, 1, lo_open=True))  # ramp ends here
    prune_embeddings: bool = setting(True)  # prune Embedding tables (the GPT's tied LM head)
    # distill: softmax temperature T (inf would flatten every distribution; nan fails too)
    temperature: float = setting(2.0, Check(lambda v: 0 < v < math.inf, "a positive finite number"))
    alpha: float = setting(0.5, interval(0, 1))  # distill: weight of the hard-label loss
    # distill: the student's token table starts "random" or as a copy of the "teacher"'s
    student_embeddings: str = setting("random", one_of(("random", "teacher")))
    # distill (classifiers): fraction of each batch replaced by augmented copies, the
    # per-piece mask rate and per-row n-gram rate of those copies (tfllm.compress.augment)
    augment: float = setting(0.0, interval(0, 1))
    augment_mask: float = setting(0.1, interval(0, 1))
    augment_ngram: float = setting(0.25, interval(0, 1))
    quantize_mode: str = setting("int8", one_of(QUANTIZE_MODES, "int8 or int4"))
