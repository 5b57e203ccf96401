"""The config file `tfllm-pipeline` loads when no --config is given (so dotted
overrides such as --config.lm.train.num_steps=300 work without one): the
journey, = configs/pipeline.py."""

from tfllm.recipes import pipeline_journey


def get_config(profile: str = "quick"):
    return pipeline_journey(profile or "quick")
