"""SST-2 recipe `cnn_sst2`; see tfllm/recipes.py and docs/classification.md.

Usage: tfllm-train --config=configs/cnn_sst2.py --workdir=runs/cnn_sst2
"""

from tfllm.recipes import cnn_sst2


def get_config():
    return cnn_sst2()
