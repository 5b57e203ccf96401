"""SST-2 recipe `minilm_sst2_short`: `minilm_sst2` at 1,000 steps and 5e-5, the length
the pretrained journey and the LoRA comparison use; see tfllm/recipes.py and
docs/finetuning.md.

Usage (after `tfllm-import --source=~/.cache/tfllm-pretrained/minilm --workdir=runs/minilm`):
  tfllm-train --config=configs/minilm_sst2_short.py --workdir=runs/minilm_sst2_short \\
      --config.train.init_from=runs/minilm
"""

from tfllm.recipes import minilm_sst2_short


def get_config():
    return minilm_sst2_short()
