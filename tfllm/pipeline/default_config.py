"""The config file `tfllm-pipeline` loads when no --config is given (so dotted
overrides such as --config.lm.train.num_steps=300 work without one): the
journey, = configs/pipeline.py; `pretrained` is the pretrained-model journey."""

from tfllm.recipes import pipeline_journey


def get_config(profile: str = "quick"):
    if profile == "pretrained":
        from tfllm.pipeline.pretrained_config import pretrained_journey

        return pretrained_journey()
    return pipeline_journey(profile or "quick")
