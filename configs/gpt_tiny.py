"""A tiny GPT on Tiny Shakespeare: the quickstart / test recipe (minutes on a laptop CPU).

Usage: tfllm-train --config=configs/gpt_tiny.py --workdir=runs/tiny
Overrides: --config.train.num_steps=200 --config.model.num_layers=2 ...
"""

from tfllm.config import base_config


def get_config():
    config = base_config()
    config.data.dataset = "shakespeare"
    config.tokenizer.vocab_size = 1024
    config.model.max_length = 128
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.hidden_dim = 128
    config.model.intermediate_dim = 512
    config.model.dropout = 0.1
    config.train.num_steps = 1000
    config.train.batch_size = 32
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 100
    config.train.steps_per_loop = 50
    config.train.eval_every = 250
    config.train.checkpoint_every = 250
    return config
