"""SST-2 recipe `gpt_sst2_pretrain`; see tfllm/recipes.py and docs/classification.md.

Usage: tfllm-train --config=configs/gpt_sst2_pretrain.py --workdir=runs/gpt_sst2_pretrain
"""

from tfllm.recipes import gpt_sst2_pretrain


def get_config():
    return gpt_sst2_pretrain()
