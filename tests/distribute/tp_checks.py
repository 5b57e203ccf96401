"""Tensor-parallel checks against an independent one-device reference; prints JSON.

Usage: tp_checks.py CHECKPOINT_DIR [TRAIN_TSV EVAL_TSV TEST_TSV TESTS_DIR]. Runs on
4 logical CPUs (configured before TensorFlow starts, hence a script of its
own): the GPT on a 1 × 2 mesh (pure tensor parallel, 2 of the devices) and on
a 2 × 2 mesh (data × tensor parallel), the transformer classifier on the 2 × 2
mesh (it shares the GPT's blocks, so the 1 × 2 case adds nothing but time),
each compared with the same model built on one device. With the labelled files it
also trains the classifier for 10 steps on one device and on the 2 × 2 mesh
(`train_classifier`) and evaluates the mesh run's checkpoint on one device.
"""

import json
import os
import sys
import tempfile
import time

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(4)]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.experimental import dtensor  # noqa: E402

from tfllm.data.lm_data import make_lm_dataset  # noqa: E402
from tfllm.distribute.mesh import local_shapes, replicated, to_host  # noqa: E402
from tfllm.distribute.tensor_parallel import MeshStrategy, sharding_spec  # noqa: E402
from tfllm.models.classifier import TransformerClassifier  # noqa: E402
from tfllm.models.gpt import GPT  # noqa: E402

VOCAB, LENGTH, BATCH, CLASSES = 100, 16, 4, 3


def build() -> GPT:
    model = GPT(VOCAB, LENGTH, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64)
    model(tf.zeros([1, LENGTH], tf.int32))
    return model


def build_classifier() -> TransformerClassifier:
    """The GPT's backbone (so `load_backbone_from` fits) with a 3-class head, no dropout."""
    model = TransformerClassifier(
        VOCAB, CLASSES, LENGTH, 2, num_heads=4, hidden_dim=32, intermediate_dim=64, dropout=0.0
    )
    model(tf.zeros([1, LENGTH], tf.int32))
    return model


def classifier_ids() -> tf.Tensor:
    """Rows of 16, 9, 5 and 12 real tokens, right-padded with 0 (the padding mask matters)."""
    ids = tf.random.stateless_uniform([BATCH, LENGTH], [5, 6], 1, VOCAB, tf.int32)
    real = tf.sequence_mask([16, 9, 5, 12], LENGTH)
    return tf.where(real, ids, tf.zeros_like(ids))


def loss_fn(model, ids, targets):
    logits = model(ids)
    ce = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_mean(ce), logits


def check(strategy: MeshStrategy, ckpt_dir: str, classifier: bool = False) -> dict:
    """Forward, gradients, per-device shards and checkpoints both ways, GPT or classifier."""
    build_fn = build_classifier if classifier else build
    keras.utils.set_random_seed(0)
    reference = build_fn()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = strategy.build_model(build_fn)
    if classifier:
        ids = classifier_ids()
        targets = tf.constant([0, 2, 1, 2], tf.int32)
    else:
        ids = tf.random.stateless_uniform([BATCH, LENGTH], [1, 2], 0, VOCAB, tf.int32)
        targets = tf.random.stateless_uniform([BATCH, LENGTH], [3, 4], 0, VOCAB, tf.int32)
    with tf.GradientTape() as tape:
        ref_loss, ref_logits = loss_fn(reference, ids, targets)
    ref_grads = tape.gradient(ref_loss, reference.trainable_variables)

    @tf.function
    def sharded_step(x, y):
        with tf.GradientTape() as tape:
            loss, logits = loss_fn(model, x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        # The classifier's token embedding gets IndexedSlices; densify as the trainer does.
        return loss, logits, [tf.convert_to_tensor(g) for g in grads]

    loss, logits, grads = sharded_step(strategy.to_mesh(ids), strategy.to_mesh(targets))
    split = {}
    for variable in model.trainable_variables:
        spec = sharding_spec(variable.path, len(variable.shape), model.tensor_parallel_splits)
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
    host = build_fn()
    tf.train.Checkpoint(model=host).restore(saved).assert_existing_objects_matched()
    weights_diff = max(
        float(np.abs(to_host(a) - to_host(b)).max())
        for a, b in zip(model.variables, host.variables, strict=True)
    )
    host_saved = tf.train.Checkpoint(model=reference).save(os.path.join(ckpt_dir, "one"))
    keras.utils.set_random_seed(9)
    with strategy.scope():
        restored = strategy.build_model(build_fn)
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


def check_init_from(strategy: MeshStrategy) -> dict:
    """`train.init_from` onto a mesh: a host GPT's weights copied into a sharded classifier."""
    keras.utils.set_random_seed(3)
    lm = build()
    keras.utils.set_random_seed(5)
    with strategy.scope():
        model = strategy.build_model(build_classifier)
    model.load_backbone_from(lm)
    keras.utils.set_random_seed(5)
    host = build_classifier()  # the same head initialisation as the mesh model's
    host.load_backbone_from(lm)
    ids = classifier_ids()
    logits = tf.function(lambda x: model(x))(strategy.to_mesh(ids))
    lm_weights = {v.path.split("/", 1)[1]: v.numpy() for v in lm.variables}
    copied = [v for v in model.variables if v.path.split("/", 1)[1] in lm_weights]
    return {
        "copied": len(copied),
        "lm_variables": len(lm.variables),
        "backbone_diff": max(
            float(np.abs(to_host(v) - lm_weights[v.path.split("/", 1)[1]][: v.shape[0]]).max())
            for v in copied
        ),
        "logits_diff": float(np.abs(to_host(logits) - host(ids).numpy()).max()),
    }


def train_classifier_runs(files: dict[str, str], tests_dir: str) -> dict:
    """10 steps of `train_classifier` on one device and at tensor_parallel=2 (2 × 2 mesh).

    max_length 8 puts every row in one length bucket, so the one-device run's
    batches hold the same rows as the mesh's fixed-length batches (the losses
    are comparable row for row). The mesh run's checkpoint is then loaded and
    evaluated on one device.
    """
    sys.path.insert(0, tests_dir)
    from conftest import classifier_config

    from tfllm.evaluation.classifier_eval import evaluate_encoded
    from tfllm.inference.loading import load_trained
    from tfllm.training.run import train_classifier

    results = {}
    for tp in (1, 2):
        config = classifier_config(files, "transformer_classifier", steps=10)
        config.model.max_length = 8
        config.model.num_heads = 4
        config.train.warmup_steps = 2
        config.train.steps_per_loop = 5
        config.train.eval_every = 10
        config.train.checkpoint_every = 10
        config.runtime.tensor_parallel = tp
        keras.utils.set_random_seed(int(config.train.seed))
        with tempfile.TemporaryDirectory() as workdir:
            metrics = train_classifier(config, workdir)
            history = json.load(open(f"{workdir}/history.json"))["history"]
            one_device = {}
            if tp > 1:
                trained = load_trained(workdir)  # no strategy: one device
                from tfllm.data.classification_data import encode_split, load_labelled_splits

                splits = load_labelled_splits(trained.config.data)
                split = encode_split(trained.tokenizer, splits.eval, trained.labels, 8, "eval")
                one_device = evaluate_encoded(
                    trained.model, split, trained.labels, batch_size=32, max_length=8
                )
        results[str(tp)] = {
            "history": [h["loss"] for h in history],
            "eval_loss": metrics["eval_loss"],
            "accuracy": metrics["accuracy"],
            "one_device_eval_loss": one_device.get("log_loss"),
            "one_device_accuracy": one_device.get("accuracy"),
        }
    return results


def check_finite_batches(strategy: MeshStrategy) -> dict:
    """A whole pass over a finite input (what every eval does), then an op on the mesh.

    TF 2.21 leaves a mesh unusable once a DTensorDataset iterator reaches its
    end; `finite_batches` must stop before it, serve every full batch in the
    one-device order, and leave the mesh working.
    """
    ids = np.arange(23 * LENGTH + 1, dtype=np.int32) % VOCAB  # 23 windows: 5 full batches of 4

    def dataset_fn(ctx):
        return make_lm_dataset(ids, LENGTH, BATCH, shuffle=False, repeat=False, input_context=ctx)

    expected = [x.numpy() for x, _ in dataset_fn(tf.distribute.InputContext(1, 0, 1))]
    served = [to_host(x) for x, _ in strategy.finite_batches(dataset_fn)]
    same = len(served) == len(expected) and all(
        np.array_equal(a, b) for a, b in zip(served, expected, strict=True)
    )
    on_mesh = dtensor.copy_to_mesh(tf.constant([1.0, 2.0]), replicated(strategy.mesh, 1))
    probe = to_host(on_mesh).tolist()
    return {"batches": len(served), "expected": len(expected), "same_rows": same,
            "mesh_usable": probe == [1.0, 2.0]}


def main(ckpt_dir: str, files: dict[str, str] | None, tests_dir: str | None) -> None:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    tp2, dp2_tp2 = MeshStrategy(2, devices=devices[:2]), MeshStrategy(2)
    results, seconds = {}, {}
    runs = {
        "tp2": lambda: check(tp2, os.path.join(ckpt_dir, "a")),
        "dp2_tp2": lambda: check(dp2_tp2, os.path.join(ckpt_dir, "b")),
        "classifier_dp2_tp2": lambda: check(dp2_tp2, os.path.join(ckpt_dir, "d"), classifier=True),
        "classifier_init_from": lambda: check_init_from(dp2_tp2),
        "finite_batches": lambda: check_finite_batches(dp2_tp2),
    }
    if files is not None and tests_dir is not None:
        runs["classifier_training"] = lambda: train_classifier_runs(files, tests_dir)
    for name, run in runs.items():
        start = time.perf_counter()
        results[name] = run()
        seconds[name] = round(time.perf_counter() - start, 1)
    results["seconds"] = seconds  # what each check costs the suite
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    labelled = None
    if len(sys.argv) > 2:
        labelled = dict(zip(("train", "eval", "test"), sys.argv[2:5], strict=True))
    main(sys.argv[1], labelled, sys.argv[5] if len(sys.argv) > 5 else None)
