"""The quick pipeline recipe (the README's first command): a tiny GPT on bundled
Tiny Shakespeare, sized to finish in about 9 minutes on a 2-core CPU.

Usage: tfllm-pipeline --config=configs/pipeline.py --workdir=runs/quickstart
"""

from tfllm.recipes import pipeline_quick


def get_config():
    return pipeline_quick()
