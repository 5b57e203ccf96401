"""The config file `tfllm-pipeline` loads when no --config is given (so dotted
overrides such as --config.train.num_steps=300 work without one)."""

from tfllm.recipes import pipeline_quick


def get_config():
    return pipeline_quick()
