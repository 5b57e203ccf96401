"""The Tiny Shakespeare GPT on its own: `gpt_tiny` for 1,200 steps, about 9 minutes
of `tfllm-pipeline` on a 2-core CPU (train → perplexity → samples → SavedModel →
LiteRT → pruning → report). The docs' LM examples use this run.

Usage: tfllm-pipeline --config=configs/shakespeare.py --workdir=runs/shakespeare
"""

from tfllm.recipes import pipeline_quick


def get_config():
    return pipeline_quick()
