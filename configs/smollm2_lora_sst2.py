"""SST-2 recipe `smollm2_lora_sst2`: a LoRA classifier on an imported SmolLM2-135M-Instruct;
see tfllm/recipes.py and docs/finetuning.md.

Usage (after `tfllm-import --workdir=runs/smollm2
--source=~/.cache/tfllm-pretrained/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`):
  tfllm-train --config=configs/smollm2_lora_sst2.py --workdir=runs/smollm2_sst2 \\
      --config.train.init_from=runs/smollm2
"""

from tfllm.recipes import smollm2_lora_sst2


def get_config():
    return smollm2_lora_sst2()
