"""Trains the same tiny GPT on one device and tensor-parallel on a DTensor mesh,
from the same seed and data, and prints both loss histories as JSON.

Usage: tp_vs_single.py CORPUS TESTS_DIR LOGICAL_CPUS TENSOR_PARALLEL...
On 4 logical CPUs, tensor_parallel=2 is a 2 × 2 (data × tensor) mesh and
tensor_parallel=4 a 1 × 4 one.
Run as a script: logical devices must be configured before TensorFlow starts,
so this cannot share a process with other tests.
"""

import json
import sys
import tempfile

sys.path.insert(0, sys.argv[2])  # tests/ (for conftest helpers)

from conftest import tiny_config  # noqa: E402

from tfllm.cli.common import setup_runtime  # noqa: E402
from tfllm.training.run import train_lm  # noqa: E402


def main(corpus: str, logical_cpus: int, tensor_parallel: list[int]) -> None:
    results = {}
    for tp in (1, *tensor_parallel):
        config = tiny_config(corpus, steps=10)
        config.runtime.logical_cpus = logical_cpus
        config.runtime.tensor_parallel = tp
        config.model.num_heads = 4
        config.train.warmup_steps = 2
        config.train.eval_every = 10
        config.train.eval_batches = 2
        config.train.steps_per_loop = 5
        config.train.sample_tokens = 4 if tp > 1 else 0
        setup_runtime(config)
        with tempfile.TemporaryDirectory() as workdir:
            metrics = train_lm(config, workdir)
            history = json.load(open(f"{workdir}/history.json"))["history"]
        results[str(tp)] = {
            "history": [h["loss"] for h in history],
            "eval_loss": metrics["eval_loss"],
        }
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[3]), [int(n) for n in sys.argv[4:]])
