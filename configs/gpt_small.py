"""GPT "small" for CPU/GPU benchmarks and real runs: vocab 8192, context 256,
6 layers, d_model 384, 6 heads, FFN 1536 (≈ 14M parameters with the tied head).

Usage: tfllm-train --config=configs/gpt_small.py --workdir=runs/small
"""

from tfllm.config import base_config


def get_config():
    config = base_config()
    config.data.dataset = "shakespeare"
    config.tokenizer.vocab_size = 8192
    config.model.max_length = 256
    config.model.num_layers = 6
    config.model.num_heads = 6
    config.model.hidden_dim = 384
    config.model.intermediate_dim = 1536
    config.model.dropout = 0.1
    config.train.num_steps = 5000
    config.train.batch_size = 8
    config.train.learning_rate = 6e-4
    config.train.warmup_steps = 200
    config.train.steps_per_loop = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    return config
