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
    """`gpt_tiny` sized for `tfllm-pipeline`'s default: ≈ 9 minutes on 2 CPU cores."""
    config = gpt_tiny()
    config.train.update(dict(num_steps=1200, eval_every=300, checkpoint_every=300, eval_batches=0))
    config.export.max_new_tokens = 48
    return config


# --------------------------------------------------------------------------
# SST-2 text classification (docs/classification.md). Every recipe trains on
# the bundled SST-2 train split, evaluates on its dev split while training, and
# is scored on `test.tsv` (= GLUE dev, the set papers report) with
# `tfllm-evaluate --split=test`. Each finishes in under 30 minutes on 2 CPU
# cores. They share one tokenizer recipe: BPE 8000 learned from SST-2 train.

SST2_VOCAB = 8000


def _sst2_base(name: str) -> ml_collections.ConfigDict:
    config = base_config()
    config.data.dataset = "sst2"
    config.tokenizer.vocab_size = SST2_VOCAB
    config.model.name = name
    config.model.max_length = 128  # no SST-2 test sentence is cut
    config.train.update(
        dict(
            batch_size=64,
            optimizer="adamw",
            weight_decay=0.01,
            beta_2=0.999,
            lr_schedule="linear",
            min_lr_ratio=0.0,
            eval_batches=0,  # the whole dev split
            early_stopping_patience=0,
            sample_prompts=[],
            sample_tokens=0,
        )
    )
    return config


def mlp_sst2() -> ml_collections.ConfigDict:
    """Bag of embeddings -> masked mean -> 2 ReLU layers (the seed's MLP baseline)."""
    config = _sst2_base("mlp_classifier")
    config.model.update(dict(embedding_dim=128, mlp_hidden_dims=[256, 256], dropout=0.3))
    config.train.update(
        dict(
            num_steps=3000,
            learning_rate=2e-3,
            warmup_steps=100,
            steps_per_loop=100,
            eval_every=500,
            checkpoint_every=500,
        )
    )
    return config


def cnn_sst2() -> ml_collections.ConfigDict:
    """Kim (2014) CNN-rand: widths 3/4/5 x 100 filters, global max-pool, dropout 0.5."""
    config = _sst2_base("cnn_classifier")
    config.model.update(
        dict(
            embedding_dim=128,
            conv_widths=[3, 4, 5],
            conv_filters=100,
            cnn_pooling="global_max",
            dropout=0.5,
        )
    )
    config.train.update(
        dict(
            num_steps=4000,
            learning_rate=1e-3,
            warmup_steps=100,
            steps_per_loop=100,
            eval_every=500,
            checkpoint_every=500,
        )
    )
    return config


def _sst2_transformer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The transformer shape shared by the LM, the scratch and the fine-tuned classifier."""
    config.model.update(
        dict(
            num_layers=4,
            num_heads=4,
            hidden_dim=256,
            intermediate_dim=1024,
            dropout=0.1,
        )
    )
    return config


def gpt_sst2_pretrain() -> ml_collections.ConfigDict:
    """The LM a fine-tuned classifier starts from: a GPT on SST-2's train sentences.

    Unlabelled in-domain text (ULMFiT's recipe): the labels are ignored, the
    dev split is its eval set, and the test split is never seen.
    """
    config = _sst2_transformer(base_config())
    config.data.dataset = "sst2"
    config.tokenizer.vocab_size = SST2_VOCAB
    config.model.max_length = 128
    config.train.update(
        dict(
            num_steps=800,  # ≈ 3.3 M tokens, 4 passes over the 0.78 M training tokens
            batch_size=32,
            learning_rate=1e-3,
            warmup_steps=80,
            steps_per_loop=50,
            eval_every=200,
            checkpoint_every=200,
            eval_batches=0,
            sample_prompts=["this movie is", "the acting"],
            sample_tokens=24,
        )
    )
    return config


def transformer_sst2() -> ml_collections.ConfigDict:
    """A bidirectional transformer classifier trained from scratch (the control)."""
    config = _sst2_transformer(_sst2_base("transformer_classifier"))
    config.model.update(dict(pooling="mean", causal=False))
    config.train.update(
        dict(
            num_steps=3000,
            learning_rate=5e-4,
            warmup_steps=300,
            steps_per_loop=100,
            eval_every=500,
            checkpoint_every=500,
        )
    )
    return config


def transformer_sst2_finetune() -> ml_collections.ConfigDict:
    """`transformer_sst2` initialised from the `gpt_sst2_pretrain` LM, GPT-1 style.

    The LM's causal attention is kept and the last real token is classified
    (GPT-1's fine-tuning recipe), so every block computes what it was
    pretrained to compute; on SST-2 this beat dropping the causal mask by 3
    test points (docs/results.md). Set `config.train.init_from` to the LM's
    workdir (default runs/gpt_sst2_pretrain); the tokenizer comes from there.
    """
    config = transformer_sst2()
    config.train.init_from = "runs/gpt_sst2_pretrain"
    config.model.update(dict(causal=True, pooling="last"))
    config.train.update(
        dict(num_steps=1500, learning_rate=2e-4, warmup_steps=150, backbone_lr_scale=1.0)
    )
    return config


def transformer_sst2_student() -> ml_collections.ConfigDict:
    """A 5× smaller transformer classifier, distilled from `transformer_sst2`.

    d 96, 2 blocks, FFN 384: ≈1.0 M parameters against the teacher's 5.2 M
    (most of both is the 8000-token embedding). Used with
    `tfllm-compress --method=distill` (docs/compression.md), which gives it
    the teacher's data and tokenizer.
    """
    config = _sst2_base("transformer_classifier")
    config.model.update(
        dict(
            num_layers=2,
            num_heads=4,
            hidden_dim=96,
            intermediate_dim=384,
            dropout=0.1,
            pooling="mean",
            causal=False,
        )
    )
    config.train.update(
        dict(
            num_steps=1500,
            learning_rate=1e-3,
            warmup_steps=150,
            steps_per_loop=100,
            eval_every=500,
            checkpoint_every=500,
        )
    )
    return config


def gpt_tiny_student() -> ml_collections.ConfigDict:
    """A 5× smaller GPT (d 64, 2 blocks, FFN 256) distilled from `gpt_tiny` runs."""
    config = gpt_tiny()
    config.model.update(dict(num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=256))
    config.train.update(dict(num_steps=1200, learning_rate=3e-3))
    return config
