"""The pretrained journey's config (`tfllm-pipeline --profile=pretrained`).

Kept apart from `tfllm.recipes.pipeline_journey` because its parts are not
whole recipes: the SmolLM2 part is a set of overrides on the config the
import writes (the model's architecture is the checkpoint's own, as keras-hub's
`from_preset` takes it), and the sources are files the fetch tool laid out.
"""

from __future__ import annotations

import os

import ml_collections

from tfllm.recipes import cnn_minilm_student, minilm_sst2_short

PRETRAINED_PROFILE = "pretrained"
# Where ../shared/tools/fetch-pretrained puts the weights unless told otherwise.
PRETRAINED_DIR_ENV = "TFLLM_PRETRAINED"
# Paths inside the pretrained directory, as the fetch tool writes them.
MINILM_SOURCE = "minilm"
SMOLLM2_SOURCE = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_pretrained_dir() -> str:
    """The fetch tool's default destination: $TFLLM_PRETRAINED or ~/.cache/tfllm-pretrained."""
    return os.environ.get(PRETRAINED_DIR_ENV) or os.path.expanduser("~/.cache/tfllm-pretrained")


def pretrained_journey() -> ml_collections.ConfigDict:
    """Import → MiniLM fine-tuned on SST-2 → CNN student distilled from it → SmolLM2
    LoRA on Tiny Shakespeare, sized for about half an hour on 2 CPU cores
    (docs/pipeline.md has the measured stage times).

    Step counts: MiniLM's recipe at its first, shorter length
    (`minilm_sst2_short`: 1,000 steps at 5e-5, 88 % test over 3 seeds;
    `configs/minilm_sst2.py`'s 2,500 steps score higher but take 25 of the 45
    minutes here, docs/finetuning.md); the student 1,500 steps where its recipe has 4,000
    (the teacher's forward pass makes a distillation step cost 5 minutes per
    1,500 here; 4,000 steps reach 84.8 % over 3 seeds); SmolLM2's LoRA the
    measured Tiny Shakespeare run (220 steps of 4 × 256 tokens, rank 8 on every
    kernel, lr 1e-3: held-out perplexity 35.0 → 24.1 in 14 minutes).
    """
    minilm = minilm_sst2_short()
    minilm.train.init_from = ""  # the journey's imported MiniLM, set at run time

    student = cnn_minilm_student()
    student.train.update(
        dict(
            num_steps=1500, warmup_steps=100, eval_every=750, checkpoint_every=750,
            steps_per_loop=100,
        )
    )  # fmt: skip

    # Overrides on the imported SmolLM2's own config.json (its model section is the
    # checkpoint's architecture; only the context used for training changes).
    smollm2 = ml_collections.ConfigDict(
        dict(
            data=dict(dataset="shakespeare", eval_fraction=0.1),
            model=dict(max_length=256),
            train=dict(
                num_steps=220, batch_size=4, learning_rate=1e-3, warmup_steps=10,
                lr_schedule="cosine", lora_rank=8, lora_targets="all", steps_per_loop=10,
                eval_every=220, eval_batches=4, checkpoint_every=110, sample_tokens=0,
            ),
        )
    )  # fmt: skip
    return ml_collections.ConfigDict(
        dict(
            profile=PRETRAINED_PROFILE,
            pretrained_dir="",  # "" = default_pretrained_dir(); --pretrained_dir sets it
            sources=dict(minilm=MINILM_SOURCE, smollm2=SMOLLM2_SOURCE),
            minilm=minilm,
            distil=dict(student=student, temperature=2.0, alpha=0.5, student_embeddings="teacher"),
            smollm2=smollm2,
        )
    )
