"""Trains the same tiny GPT on one device and on MirroredStrategy over 2 logical
CPUs, from the same seed and data, and prints both loss histories as JSON.

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


def main(corpus: str) -> None:
    losses = {}
    for strategy in ("default", "mirrored"):
        config = tiny_config(corpus, steps=30)
        config.runtime.strategy = strategy
        config.runtime.logical_cpus = 2
        config.train.eval_every = 30
        config.train.sample_tokens = 0
        setup_runtime(config)
        with tempfile.TemporaryDirectory() as workdir:
            metrics = train_lm(config, workdir)
            history = json.load(open(f"{workdir}/history.json"))["history"]
        losses[strategy] = {"history": [h["loss"] for h in history],
                            "eval_loss": metrics["eval_loss"], "replicas": metrics["replicas"]}
    print("RESULT " + json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv[1])
