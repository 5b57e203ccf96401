"""Pipeline-parallel checks against an independent one-device reference; prints JSON.

Usage: pp_checks.py CHECKPOINT_DIR CORPUS TESTS_DIR TRAIN_WORKDIR. Runs on 2 logical
CPUs (configured before TensorFlow starts, hence a script of its own):

- the GPT (3 blocks, so the split is uneven: blocks 0-1 | 2) at K=2, M=4:
  gradients against the same model's full-batch gradients on one device,
  variable and optimizer-slot placement, where the backward ops run, and a
  K=2 checkpoint restored on one device;
- `train_lm` at K=2 M=4, on one device, and at K=2 M=2 with grad_accum_steps=2,
  from the same seed, data and tokenizer: loss histories (the K=2 M=4 workdir
  is kept in TRAIN_WORKDIR for the CLI checks).
"""

import json
import os
import sys
import tempfile

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(2)]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, sys.argv[3])  # tests/ (for conftest helpers)

from conftest import tiny_config  # noqa: E402

from tfllm.cli.common import setup_runtime  # noqa: E402
from tfllm.distribute.pipeline_parallel import PipelineStrategy  # noqa: E402
from tfllm.errors import ConfigError  # noqa: E402
from tfllm.models.gpt import GPT  # noqa: E402
from tfllm.training.run import train_lm  # noqa: E402
from tfllm.training.tasks import LMTask  # noqa: E402

VOCAB, LENGTH, BATCH, LAYERS = 100, 16, 8, 3


def build() -> GPT:
    model = GPT(VOCAB, LENGTH, num_layers=LAYERS, num_heads=2, hidden_dim=32, intermediate_dim=64)
    model(tf.zeros([1, LENGTH], tf.int32))
    return model


def short(device: str) -> str:
    spec = tf.DeviceSpec.from_string(device)
    return f"{spec.device_type}:{spec.device_index}"


def model_checks(ckpt_dir: str) -> dict:
    task = LMTask(np.zeros([LENGTH * 4], np.int32), None, LENGTH)
    keras.utils.set_random_seed(0)
    reference = build()
    keras.utils.set_random_seed(0)
    strategy = PipelineStrategy(2, 4)
    with strategy.scope():
        model = strategy.build_model(build)
        optimizer = keras.optimizers.AdamW(1e-2)
        optimizer.build(model.trainable_variables)
    ids = tf.random.stateless_uniform([BATCH, LENGTH], [1, 2], 0, VOCAB, tf.int32)
    targets = tf.random.stateless_uniform([BATCH, LENGTH], [3, 4], 0, VOCAB, tf.int32)

    with tf.GradientTape() as tape:
        ref_loss = tf.reduce_mean(task.per_example_loss(reference, ids, targets, True))
    ref_grads = tape.gradient(ref_loss, reference.trainable_variables)

    @tf.function
    def pipelined(x, y):
        loss = tf.reduce_mean(strategy.per_example_loss(task, model, x, y, True))
        return loss, strategy.gradients(loss, model.trainable_variables)

    loss, grads = pipelined(ids, targets)
    grads_diff = max(
        float(np.abs(tf.convert_to_tensor(a).numpy() - tf.convert_to_tensor(b).numpy()).max())
        for a, b in zip(ref_grads, grads, strict=True)
    )
    # Where the step's ops were asked to run (the placer honours requested devices).
    graph = pipelined.get_concrete_function(ids, targets).graph
    backward = {}
    for op in graph.get_operations():
        if op.name.startswith("gradients/") and op.type in ("MatMul", "BatchMatMulV2", "Einsum"):
            key = short(op.device) if op.device else "unplaced"
            backward[key] = backward.get(key, 0) + 1

    placement = {
        v.path: {"device": short(v.value.device), "expected": short(strategy.stage_device(v.path))}
        for v in model.weights
        if strategy.stage_device(v.path) is not None
    }
    slots_on_their_variable = all(
        short(slot.value.device) == short(variable.value.device)
        for variable in model.trainable_variables
        for slot in optimizer.variables
        if slot.path.startswith(variable.path.replace("/", "_") + "_")
        or slot.name.startswith(variable.path.replace("/", "_") + "_")
    )
    slot_count = sum(
        1
        for slot in optimizer.variables
        if any(slot.name.startswith(v.path.replace("/", "_") + "_") for v in model.weights)
    )

    # One AdamW step, so the checkpoint is not the shared initial weights; then
    # a one-device model restores it and must compute the same logits.
    @tf.function
    def apply(step_grads):
        optimizer.apply([tf.convert_to_tensor(g) for g in step_grads], model.trainable_variables)

    apply(grads)
    staged_logits = tf.function(lambda x: model(x))(ids).numpy()
    saved = tf.train.Checkpoint(model=model).save(os.path.join(ckpt_dir, "pp"))
    keras.utils.set_random_seed(7)
    host = build()
    tf.train.Checkpoint(model=host).restore(saved).assert_existing_objects_matched()
    return {
        "loss": [float(ref_loss), float(loss)],
        "grads_diff": grads_diff,
        "num_grads": [len(ref_grads), len(grads)],
        "block_stage": strategy.block_stage,
        "placement": placement,
        "per_device": strategy.parameters_per_device(model),
        "total_params": int(reference.count_params()),
        "slots_on_their_variable": slots_on_their_variable,
        "slot_count": slot_count,
        "backward_matmuls": backward,
        "pp_to_one_weights_diff": max(
            float(np.abs(a.numpy() - b.numpy()).max())
            for a, b in zip(model.weights, host.weights, strict=True)
        ),
        "pp_to_one_logits_diff": float(np.abs(host(ids).numpy() - staged_logits).max()),
        "describe": strategy.describe(),
    }


def training_runs(corpus: str, keep_workdir: str) -> dict:
    results = {}
    # The K=2 M=4 run first: it learns the tokenizer the others reuse, and its
    # workdir is kept for the CLI checks.
    runs = (("pp2_m4", 2, 4, 1), ("one", 1, 1, 1), ("pp2_m2_a2", 2, 2, 2))
    for name, stages, micro, accum in runs:
        config = tiny_config(corpus, steps=10)
        config.runtime.logical_cpus = 2
        config.runtime.pipeline_stages = stages
        config.runtime.num_microbatches = micro
        config.train.grad_accum_steps = accum
        config.train.warmup_steps = 2
        config.train.eval_every = 10
        config.train.checkpoint_every = 10
        config.train.eval_batches = 2
        config.train.steps_per_loop = 5
        # Samples (eager generation on the placed weights) once; one tokenizer for all.
        config.train.sample_tokens = 4 if name == "pp2_m4" else 0
        config.tokenizer.path = os.path.join(keep_workdir, "tokenizer") if results else ""
        setup_runtime(config)
        with tempfile.TemporaryDirectory() as scratch:
            workdir = keep_workdir if name == "pp2_m4" else os.path.join(scratch, "w")
            metrics = train_lm(config, workdir)
            with open(f"{workdir}/history.json", encoding="utf-8") as f:
                history = json.load(f)["history"]
        results[name] = {
            "history": [h["loss"] for h in history],
            "eval_loss": metrics["eval_loss"],
        }
    return results


def too_few_devices() -> str:
    """The error for more stages than devices (3 stages, 2 logical CPUs)."""
    try:
        PipelineStrategy(3, 1)
    except ConfigError as e:
        return str(e)
    return ""


def main(ckpt_dir: str, corpus: str, train_workdir: str) -> None:
    results = {
        "model": model_checks(ckpt_dir),
        "too_few_devices": too_few_devices(),
        "train": training_runs(corpus, train_workdir),
    }
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[4])
