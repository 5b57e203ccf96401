"""Tensor-parallel checks against an independent one-device reference; prints JSON.

Usage: tp_checks.py CHECKPOINT_DIR. Runs on 4 logical CPUs (configured before
TensorFlow starts, hence a script of its own): the GPT on a 1 × 2 mesh (pure
tensor parallel, 2 of the devices) and on a 2 × 2 mesh (data × tensor
parallel), each compared with the same model built on one device.
"""

import json
import os
import sys

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(4)]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfllm.models.gpt import GPT  # noqa: E402
from tfllm.parallel.mesh import local_shapes, to_host  # noqa: E402
from tfllm.parallel.tensor_parallel import MeshStrategy, sharding_spec  # noqa: E402

VOCAB, LENGTH, BATCH = 100, 16, 4


def build() -> GPT:
    model = GPT(VOCAB, LENGTH, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64)
    model(tf.zeros([1, LENGTH], tf.int32))
    return model


def loss_fn(model, ids, targets):
    logits = model(ids)
    ce = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_mean(ce), logits


def check(strategy: MeshStrategy, ckpt_dir: str) -> dict:
    keras.utils.set_random_seed(0)
    reference = build()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = strategy.build_model(build)
    ids = tf.random.stateless_uniform([BATCH, LENGTH], [1, 2], 0, VOCAB, tf.int32)
    targets = tf.random.stateless_uniform([BATCH, LENGTH], [3, 4], 0, VOCAB, tf.int32)
    with tf.GradientTape() as tape:
        ref_loss, ref_logits = loss_fn(reference, ids, targets)
    ref_grads = tape.gradient(ref_loss, reference.trainable_variables)

    @tf.function
    def sharded_step(x, y):
        with tf.GradientTape() as tape:
            loss, logits = loss_fn(model, x, y)
        return loss, logits, tape.gradient(loss, model.trainable_variables)

    loss, logits, grads = sharded_step(strategy.to_mesh(ids), strategy.to_mesh(targets))
    split = {}
    for variable in model.trainable_variables:
        spec = sharding_spec(variable.path, len(variable.shape))
        if "model" in spec:
            split[variable.path] = {
                "global": list(variable.shape),
                "axis": spec.index("model"),
                "local": [list(shape) for _, shape in local_shapes(variable)],
                "devices": [device for device, _ in local_shapes(variable)],
            }

    # Layout-free checkpoints, both ways: mesh -> host and host -> mesh. One
    # SGD step first, so the saved weights are not the shared initial ones.
    @tf.function
    def sgd(step_grads):
        for variable, grad in zip(model.trainable_variables, step_grads, strict=True):
            variable.assign_sub(0.5 * tf.convert_to_tensor(grad))

    sgd(grads)
    trained_logits = tf.function(lambda x: model(x))(strategy.to_mesh(ids))
    saved = tf.train.Checkpoint(model=model).save(os.path.join(ckpt_dir, "tp"))
    keras.utils.set_random_seed(7)
    host = build()
    tf.train.Checkpoint(model=host).restore(saved).assert_existing_objects_matched()
    weights_diff = max(
        float(np.abs(to_host(a) - to_host(b)).max())
        for a, b in zip(model.variables, host.variables, strict=True)
    )
    host_saved = tf.train.Checkpoint(model=reference).save(os.path.join(ckpt_dir, "one"))
    keras.utils.set_random_seed(9)
    with strategy.scope():
        restored = strategy.build_model(build)
    tf.train.Checkpoint(model=restored).restore(host_saved).assert_existing_objects_matched()
    restored_logits = tf.function(lambda x: restored(x))(strategy.to_mesh(ids))
    return {
        "mesh": [strategy.mesh.dim_size("batch"), strategy.mesh.dim_size("model")],
        "loss": [float(ref_loss), float(to_host(loss))],
        "logits_diff": float(np.abs(to_host(logits) - ref_logits.numpy()).max()),
        "grads_diff": max(
            float(np.abs(np.asarray(tf.convert_to_tensor(a)) - to_host(b)).max())
            for a, b in zip(ref_grads, grads, strict=True)
        ),
        "grad_layouts_kept": all(
            to_host(g).shape == tuple(v.shape)
            for g, v in zip(grads, model.trainable_variables, strict=True)
        ),
        "split": split,
        "tp_to_one_weights_diff": weights_diff,
        "tp_to_one_logits_diff": float(np.abs(host(ids).numpy() - to_host(trained_logits)).max()),
        "one_to_tp_logits_diff": float(np.abs(to_host(restored_logits) - ref_logits.numpy()).max()),
    }


def main(ckpt_dir: str) -> None:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    results = {
        "tp2": check(MeshStrategy(2, devices=devices[:2]), os.path.join(ckpt_dir, "a")),
        "dp2_tp2": check(MeshStrategy(2), os.path.join(ckpt_dir, "b")),
    }
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
