"""SST-2 recipe `transformer_sst2_finetune`; see tfllm/recipes.py and docs/classification.md.

Usage (after configs/gpt_sst2_pretrain.py has trained runs/gpt_sst2_pretrain):
  tfllm-train --config=configs/transformer_sst2_finetune.py \
      --workdir=runs/transformer_sst2_finetune
"""

from tfllm.recipes import transformer_sst2_finetune


def get_config():
    return transformer_sst2_finetune()
