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
    """`gpt_tiny` sized for an LM-only `tfllm-pipeline` run: ≈ 9 minutes on 2 CPU cores."""
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


def minilm_sst2() -> ml_collections.ConfigDict:
    """all-MiniLM-L6-v2 (imported into runs/minilm) fine-tuned whole on SST-2.

    BERT's fine-tuning recipe (the issue's Keras baseline): AdamW, 10 % warmup
    then linear decay, batch 32, dropout 0.1; mean pooling over real tokens,
    as MiniLM's sentence-transformers training pooled. Length and step chosen
    on the eval split (docs/finetuning.md): 1,000 steps at 5e-5 scored 91.3 %
    there, 2,500 (1.3 passes) at 1e-4 94.6 %. About 25 minutes on 2 AVX2 cores.
    `train.init_from` supplies the architecture and the WordPiece tokenizer.
    """
    config = _sst2_base("bert_classifier")
    config.train.init_from = "runs/minilm"
    config.model.update(dict(max_length=128, pooling="mean", dropout=0.1))
    config.train.update(
        dict(
            num_steps=2500,
            batch_size=32,
            learning_rate=1e-4,
            warmup_steps=250,
            weight_decay=0.01,
            grad_clip_norm=1.0,
            steps_per_loop=50,
            eval_every=500,
            eval_batches=40,
            checkpoint_every=500,
        )
    )
    return config


def minilm_sst2_short() -> ml_collections.ConfigDict:
    """`minilm_sst2` as first measured (1,000 steps at 5e-5): the LoRA comparison's
    baseline and the pretrained journey's length (its 45 minutes on 2 cores)."""
    config = minilm_sst2()
    config.train.update(dict(num_steps=1000, learning_rate=5e-5, warmup_steps=100))
    return config


def cnn_minilm_student() -> ml_collections.ConfigDict:
    """`cnn_sst2` as a student of a MiniLM classifier: embeddings 384 wide, MiniLM's
    hidden width, so `tfllm-compress --method=distill --student_embeddings=teacher`
    can start its token table as a copy of the teacher's (CNN-static, in Kim's terms)."""
    config = cnn_sst2()
    config.model.embedding_dim = 384
    return config


def minilm_lora_sst2() -> ml_collections.ConfigDict:
    """`minilm_sst2` with the encoder frozen and rank-8 LoRA adapters trained instead.

    Adapters on every attention and MLP kernel (q/k/v/o and both feed-forward
    kernels: 0.89 M weights with Keras' per-head factorization of q/k/v, 3.8 %
    of the model; tfllm.models.lora says why). Adapters
    start at zero and need a larger step than full fine-tuning's 5e-5: the
    LoRA paper's GLUE recipes use 4e-4 to 5e-4 on RoBERTa; 1e-3 here, as the
    run is half an epoch. Compared with full fine-tuning at the same 1,000
    steps (`minilm_sst2_short`, docs/finetuning.md); everything else is
    `minilm_sst2`'s.
    """
    config = minilm_sst2_short()
    config.train.update(dict(lora_rank=8, lora_targets="all", learning_rate=1e-3))
    return config


def smollm2_lora_sst2() -> ml_collections.ConfigDict:
    """SmolLM2-135M-Instruct (imported into runs/smollm2) as an SST-2 classifier, LoRA.

    transformers' `LlamaForSequenceClassification` recipe: the decoder reads
    the sentence, a new linear head reads the last real token's state. Only
    rank-8 adapters on every attention and MLP kernel (q/k/v/o, gate/up/down:
    2.44 M weights in the paper's A·B shape, 1.8 % of the model) and the head
    train; AdamW at 5e-4 with 50 warmup steps then linear decay, batch 32, no
    dropout (SmolLM2 was trained without). 600 steps (19,200 sentences, a
    third of a pass; docs/finetuning.md has the measured run and its time).
    `train.init_from` supplies the architecture and the byte-level BPE
    tokenizer.
    """
    config = _sst2_base("llama_classifier")
    config.train.init_from = "runs/smollm2"
    config.model.update(dict(max_length=64, pooling="last", dropout=0.0))
    config.train.update(dict(
        num_steps=600, batch_size=32, learning_rate=5e-4, warmup_steps=50, weight_decay=0.01,
        grad_clip_norm=1.0, lora_rank=8, lora_targets="all", steps_per_loop=25, eval_every=300,
        eval_batches=40, checkpoint_every=100,
    ))  # fmt: skip
    return config


def gpt_tiny_student() -> ml_collections.ConfigDict:
    """A 5× smaller GPT (d 64, 2 blocks, FFN 256) distilled from `gpt_tiny` runs."""
    config = gpt_tiny()
    config.model.update(dict(num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=256))
    config.train.update(dict(num_steps=1200, learning_rate=3e-3))
    return config


# --------------------------------------------------------------------------
# The journey (`tfllm-pipeline`'s default, docs/pipeline.md): one command from
# raw text to a report. Each part is a complete tfllm config, so every number
# in the report can be reproduced with the per-part commands it prints.

JOURNEY_PROFILES = ("quick", "full")

# Steps per part: quick fits 10 minutes on 2 CPU cores, full 60 (docs/pipeline.md
# has the measured stage times).
_JOURNEY_STEPS = {
    "quick": dict(lm=500, transformer=400, cnn=800, mlp=800, student=300),
    "full": dict(lm=3000, transformer=1500, cnn=4000, mlp=3000, student=1500),
}


def _every(steps: int, times: int) -> int:
    """An eval/checkpoint interval that divides `steps` into `times` parts."""
    return max(1, steps // times)


def _with_steps(config: ml_collections.ConfigDict, steps: int, warmup: int) -> None:
    config.train.update(
        dict(
            num_steps=steps,
            warmup_steps=min(warmup, steps // 10),
            eval_every=_every(steps, 2),
            checkpoint_every=_every(steps, 2),
            steps_per_loop=min(int(config.train.steps_per_loop), _every(steps, 4)),
        )
    )


def pipeline_journey(profile: str = "quick") -> ml_collections.ConfigDict:
    """The whole journey's parts: a GPT pretrained on SST-2's sentences, a transformer
    classifier fine-tuned from it on SST-2's labels, the CNN and MLP baselines, a
    distilled student, and the benchmark settings.

    The LM reads the same text the classifiers are scored on (without the
    labels: ULMFiT's and GPT-1's in-domain pretraining). Pretrained on Tiny
    Shakespeare instead, the fine-tuned classifier reached 64% dev accuracy after
    200 steps against 74% from this LM (docs/pipeline.md). The fine-tuned
    transformer inherits the LM's architecture and tokenizer (`train.init_from`,
    set to the journey's `lm/` workdir at run time); the baselines learn their
    own SST-2 tokenizers, as their recipes do.
    """
    if profile not in JOURNEY_PROFILES:
        raise ValueError(f"profile must be one of {JOURNEY_PROFILES}, got {profile!r}")
    steps = _JOURNEY_STEPS[profile]
    lm = gpt_sst2_pretrain()
    lm.tokenizer.vocab_size = 4000  # the LM head is most of a small model's cost
    lm.model.update(dict(hidden_dim=128, intermediate_dim=512, max_length=64))
    lm.train.learning_rate = 2e-3
    _with_steps(lm, steps["lm"], 50)
    lm.export.max_new_tokens = 24
    lm.export.verify_prompts = ["this movie is", "the acting was", "i"]

    transformer = transformer_sst2_finetune()
    transformer.train.init_from = ""  # the journey's lm/ workdir
    transformer.model.max_length = 64  # the LM's context
    transformer.train.update(dict(batch_size=32, learning_rate=5e-4))
    _with_steps(transformer, steps["transformer"], 40)

    cnn = cnn_sst2()
    _with_steps(cnn, steps["cnn"], 100)
    mlp = mlp_sst2()
    _with_steps(mlp, steps["mlp"], 100)

    student = transformer_sst2_student()
    student.model.update(dict(max_length=64, hidden_dim=64, intermediate_dim=256))
    _with_steps(student, steps["student"], 150)
    student.train.batch_size = 32

    return ml_collections.ConfigDict(
        dict(
            profile=profile,
            lm=lm,
            transformer=transformer,
            cnn=cnn,
            mlp=mlp,
            distil=ml_collections.ConfigDict(dict(student=student, temperature=2.0, alpha=0.5)),
            benchmark=ml_collections.ConfigDict(
                dict(
                    peer="keras_hub",
                    steps=5 if profile == "quick" else 10,
                    warmup=2,
                    repeats=3 if profile == "quick" else 5,
                    decode_batch=8,
                    decode_prompt_len=16,
                    decode_new_tokens=32 if profile == "quick" else 40,
                )
            ),
        )
    )
