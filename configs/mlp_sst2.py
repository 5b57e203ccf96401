"""SST-2 recipe `mlp_sst2`; see tfllm/recipes.py and docs/classification.md.

Usage: tfllm-train --config=configs/mlp_sst2.py --workdir=runs/mlp_sst2
"""

from tfllm.recipes import mlp_sst2


def get_config():
    return mlp_sst2()
