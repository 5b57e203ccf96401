"""SST-2 recipe `minilm_lora_sst2`: rank-8 LoRA on an imported all-MiniLM-L6-v2; see
tfllm/recipes.py and docs/finetuning.md.

Usage (after `tfllm-import --source=~/.cache/tfllm-pretrained/minilm --workdir=runs/minilm`):
  tfllm-train --config=configs/minilm_lora_sst2.py --workdir=runs/minilm_lora_sst2 \\
      --config.train.init_from=runs/minilm
"""

from tfllm.recipes import minilm_lora_sst2


def get_config():
    return minilm_lora_sst2()
