"""`tfllm-train` as a library call: config → tokenizer → data → trained checkpoint.

The CLI and the pipeline both call `train_lm`, so there is one code path.
"""

from __future__ import annotations

import os

import ml_collections

from tfllm.config import config_to_json, load_workdir_config
from tfllm.errors import ConfigError
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
                raise ConfigError(
                    f"config.{section}.{key}: {value!r} differs from {saved[section].get(key)!r} "
                    f"in {workdir}/config.json; the checkpoints there cannot be resumed with it "
                    "(use a new --workdir)"
                )


def train_lm(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the language model described by `config` in `workdir`."""
    from tfllm.data.sources import ensure_tokenizer, lm_token_streams, load_text_splits
    from tfllm.inference.generate import Generator, generate_text
    from tfllm.models import build_model
    from tfllm.training.strategy import create_strategy, is_chief
    from tfllm.training.trainer import LMTrainer, check_batch_divisible

    _check_resume_compatible(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    strategy = create_strategy(config.runtime)
    check_batch_divisible(config, strategy)  # before any data is read
    splits = load_text_splits(config.data)
    tokenizer = ensure_tokenizer(config, workdir, splits.train)
    train_ids, eval_ids = lm_token_streams(config, tokenizer, splits)
    print(
        f"Data: {len(train_ids):,} training tokens from {splits.train_source}, "
        f"{0 if eval_ids is None else len(eval_ids):,} eval tokens; "
        f"vocab {tokenizer.vocab_size}; strategy {config.runtime.strategy} "
        f"({strategy.num_replicas_in_sync} replica(s))",
        flush=True,
    )
    if is_chief(strategy):
        atomic_write_text(os.path.join(workdir, "config.json"), config_to_json(config))

    prompts = list(config.train.sample_prompts)
    sample_tokens = int(config.train.sample_tokens)

    def sample_fn(model, step: int) -> list[str]:
        if not prompts or sample_tokens == 0:
            return []
        generator = Generator(model, use_xla=False)
        outs = generate_text(
            generator,
            tokenizer,
            prompts,
            sample_tokens,
            sampler="top_k",
            top_k=40,
            temperature=0.8,
            seed=step,
        )
        return [p + o for p, o in zip(prompts, outs, strict=True)]

    trainer = LMTrainer(
        config,
        workdir,
        strategy,
        build_model=lambda: build_model(config.model, tokenizer.vocab_size),
        train_ids=train_ids,
        eval_ids=eval_ids,
        sample_fn=sample_fn,
    )
    metrics = trainer.train()
    metrics["train_tokens"] = int(len(train_ids))
    if is_chief(strategy):
        atomic_write_json(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
