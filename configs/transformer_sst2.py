"""SST-2 recipe `transformer_sst2`; see tfllm/recipes.py and docs/classification.md.

Usage: tfllm-train --config=configs/transformer_sst2.py --workdir=runs/transformer_sst2
"""

from tfllm.recipes import transformer_sst2


def get_config():
    return transformer_sst2()
