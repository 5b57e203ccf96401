"""GPT "small" for benchmarks and real runs: vocab 8192, context 256, 6 layers,
d_model 384, 6 heads, FFN 1536 (≈ 14M parameters with the tied head), batch 8.

Usage: tfllm-train --config=configs/gpt_small.py --workdir=runs/small
"""

from tfllm.recipes import gpt_small


def get_config():
    return gpt_small()
