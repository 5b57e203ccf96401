"""The quick pipeline recipe (the README's first command): a tiny GPT on bundled
Tiny Shakespeare, sized to finish in a few minutes on a 2-core CPU.

Usage: tfllm-pipeline --config=configs/pipeline.py --workdir=runs/quickstart
"""

from tfllm.pipeline.lm_pipeline import default_config


def get_config():
    return default_config()
