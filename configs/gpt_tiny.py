"""A tiny GPT on Tiny Shakespeare: the quickstart / test recipe (minutes on a laptop CPU).

Vocab 1024, context 128, 4 layers, d 128, 4 heads, FFN 512; 1000 steps × 32 windows.
Usage: tfllm-train --config=configs/gpt_tiny.py --workdir=runs/tiny
Overrides: --config.train.num_steps=200 --config.model.num_layers=2 ...
"""

from tfllm.recipes import gpt_tiny


def get_config():
    return gpt_tiny()
