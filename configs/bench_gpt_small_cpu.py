"""`tfllm-benchmark`'s reference shape: GPT "small" (vocab 8192, context 256,
6 layers, d 384, 6 heads, FFN 1536), batch 8, dropout 0 so the timed step does
no random masking (keras-hub's peer gets dropout 0 too).

Usage: tfllm-benchmark --config=configs/bench_gpt_small_cpu.py --mode=all --peer=keras_hub
"""

from tfllm.recipes import gpt_small


def get_config():
    config = gpt_small()
    config.model.dropout = 0.0
    return config
