"""Named config recipes. `configs/*.py` are thin files that return these, so the
recipes also work from an installed package (where `configs/` is absent)."""

from __future__ import annotations

import ml_collections

from tfllm.config import base_config


def gpt_tiny() -> ml_collections.ConfigDict:
    """A 0.94 M-parameter GPT on Tiny Shakespeare: the quickstart / test recipe."""
    config = base_config()
    config.data.dataset = "shakespeare"
    config.tokenizer.vocab_size = 1024
    config.model.update(
        dict(
            max_length=128,
            num_layers=4,
            num_heads=4,
            hidden_dim=128,
            intermediate_dim=512,
            dropout=0.1,
        )
    )
    config.train.update(
        dict(
            num_steps=1000,
            batch_size=32,
            learning_rate=2e-3,
            warmup_steps=100,
            steps_per_loop=50,
            eval_every=250,
            checkpoint_every=250,
        )
    )
    return config


def gpt_small() -> ml_collections.ConfigDict:
    """GPT "small" (vocab 8192, context 256, 6 layers, d 384, 6 heads, FFN 1536;
    ≈ 14 M parameters with the tied head), batch 8: the benchmark shape."""
    config = base_config()
    config.data.dataset = "shakespeare"
    config.tokenizer.vocab_size = 8192
    config.model.update(
        dict(
            max_length=256,
            num_layers=6,
            num_heads=6,
            hidden_dim=384,
            intermediate_dim=1536,
            dropout=0.1,
        )
    )
    config.train.update(
        dict(
            num_steps=5000,
            batch_size=8,
            learning_rate=6e-4,
            warmup_steps=200,
            steps_per_loop=50,
            eval_every=500,
            checkpoint_every=500,
        )
    )
    return config


def pipeline_quick() -> ml_collections.ConfigDict:
    """`gpt_tiny` sized for `tfllm-pipeline`'s default: ≈ 7 minutes on 2 CPU cores."""
    config = gpt_tiny()
    config.train.update(dict(num_steps=1200, eval_every=300, checkpoint_every=300, eval_batches=0))
    config.export.max_new_tokens = 48
    return config
