"""Batch generation and evaluation of one trained workdir under several strategies,
in one process with 2 logical CPUs; prints one `RESULT {json}` line.

Run as a script: logical devices must be configured before TensorFlow starts, so
this cannot share a process with other tests (tests/inference/test_distributed_generate.py).

  python distributed_checks.py WORKDIR PROMPTS_FILE MAX_NEW_TOKENS
"""

from __future__ import annotations

import json
import sys


def main(workdir: str, prompts_file: str, max_new_tokens: int) -> None:
    from tfllm.distribute.strategy import configure_logical_cpus

    configure_logical_cpus(2)  # before TensorFlow picks its devices

    import tensorflow as tf

    from tfllm.data.sources import lm_token_streams, load_text_splits
    from tfllm.distribute.tensor_parallel import MeshStrategy
    from tfllm.evaluation.metrics import lm_loss_and_perplexity, lm_loss_sharded
    from tfllm.inference.distributed import BatchGenerator
    from tfllm.inference.generate import Generator
    from tfllm.inference.loading import load_trained
    from tfllm.inference.prompts import read_prompts

    one = load_trained(workdir)
    tokenizer, eos = one.tokenizer, one.tokenizer.eos_id
    prompts = [tokenizer.encode(p.text) or [eos] for p in read_prompts(prompts_file)]
    sampled = {"sampler": "temperature", "temperature": 1.0}

    def cut(ids: list[int]) -> list[int]:
        return ids[: ids.index(eos)] if eos in ids else ids

    generator = Generator(one.model)
    result: dict = {"lengths": [len(p) for p in prompts]}
    result["single_greedy"] = [
        cut(generator.generate(p, max_new_tokens, eos_id=eos).tolist()) for p in prompts
    ]
    result["single_sampled"] = [
        cut(generator.generate(p, max_new_tokens, eos_id=eos, seed=i, **sampled).tolist())
        for i, p in enumerate(prompts)
    ]
    result["single_sampled_text"] = [tokenizer.decode(ids) for ids in result["single_sampled"]]

    mirrored = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")]
    )
    on_mirrored = load_trained(workdir, mirrored)
    batched = BatchGenerator(on_mirrored.model, mirrored, batch_size=3)
    for kind, kwargs in (("greedy", {}), ("sampled", sampled)):
        out = batched.generate(prompts, max_new_tokens, eos_id=eos, **kwargs)
        result[f"mirrored_{kind}"] = [c.ids for c in out]

    config = one.config
    _, eval_ids = lm_token_streams(config, tokenizer, load_text_splits(config.data))
    seq_len = int(config.model.max_length)
    result["eval_reference"] = lm_loss_and_perplexity(one.model, eval_ids, seq_len, 6)["loss"]
    mesh = MeshStrategy(2)
    on_mesh_model = load_trained(workdir, mesh).model
    for name, strategy, model in (
        ("default", tf.distribute.get_strategy(), one.model),
        ("mirrored", mirrored, on_mirrored.model),
        ("tensor_parallel", mesh, on_mesh_model),
    ):
        result[f"eval_{name}"] = lm_loss_sharded(model, strategy, eval_ids, seq_len, 6)
    on_mesh = BatchGenerator(on_mesh_model, mesh, batch_size=3)
    for kind, kwargs in (("greedy", {}), ("sampled", sampled)):
        out = on_mesh.generate(prompts, max_new_tokens, eos_id=eos, **kwargs)
        result[f"tensor_parallel_{kind}"] = [c.ids for c in out]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
