"""The journey `tfllm-pipeline` runs by default (docs/pipeline.md): a GPT pretrained
on SST-2's sentences (labels unused), a transformer classifier fine-tuned from it
on SST-2's labels, CNN and MLP baselines, pruning, distillation, exports,
verification, benchmark, report.

Usage: tfllm-pipeline --config=configs/pipeline.py --workdir=runs/quickstart
       tfllm-pipeline --config=configs/pipeline.py:full --workdir=runs/full
       (the same as --profile=full); override any part's key with
       --config.lm.train.num_steps=300, --config.cnn.model.dropout=0.3, ...
       tfllm-pipeline --profile=pretrained --workdir=runs/pretrained: published models
       (configs/pipeline.py:pretrained; docs/pipeline.md#pretrained-models---profilepretrained)
"""

from tfllm.recipes import pipeline_journey


def get_config(profile: str = "quick"):
    if profile == "pretrained":
        from tfllm.pipeline.pretrained_config import pretrained_journey

        return pretrained_journey()
    return pipeline_journey(profile or "quick")
