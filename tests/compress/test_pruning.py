"""Pruning: which kernels are found, their [out, in] view, the schedule, 2:4, and resume.

Unit tests drive `PruningPlugin` by hand on tiny in-process models, the way
`Trainer` does (setup, initialize, then an optimizer update followed by
`after_update` inside one `tf.function`), and compare with independent
references: tfmot's public schedule and the number of weights it must keep,
and the smallest magnitudes of every group of 4. One in-process
`tfllm.compress.run.compress` on the session's CNN classifier checks that the
checkpointed masks, the saved weights and a fresh restore agree.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfllm.compress.kernels import PRUNABLE_KINDS, find_kernels
from tfllm.compress.pruning import PruningPlugin, PruningSpec, parse_m_by_n, spec_from_config
from tfllm.errors import ConfigError

VOCAB = 64
MASK_PREFIX = "pruning/masks/"


def _gpt(num_layers: int = 1):
    from tfllm.models.gpt import GPT

    model = GPT(
        vocab_size=VOCAB,
        max_length=16,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    model(tf.zeros([1, 16], tf.int32))
    return model


def _classifier(name: str, num_layers: int = 1):
    from tfllm.config import base_config
    from tfllm.models import build_model

    config = base_config().model
    config.update(
        dict(
            name=name,
            max_length=16,
            num_layers=num_layers,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            embedding_dim=8,
            conv_filters=8,
            mlp_hidden_dims=(8, 12),
        )
    )
    return build_model(config, VOCAB, 3)


def _model(family: str):
    return _gpt() if family == "gpt" else _classifier(family)


FAMILIES = ["gpt", "transformer_classifier", "cnn_classifier", "mlp_classifier"]


# ------------------------------------------------------------ find_kernels
def _by_suffix(kernels, suffix):
    return [k for k in kernels if k.name.endswith(suffix)]


@pytest.mark.parametrize("family", ["gpt", "transformer_classifier"])
def test_find_kernels_covers_attention_feedforward_and_embedding(family):
    model = _gpt(num_layers=2) if family == "gpt" else _classifier(family, num_layers=2)
    kernels = find_kernels(model)
    expected = {
        "self_attention/query/kernel": "einsum_dense",
        "self_attention/key/kernel": "einsum_dense",
        "self_attention/value/kernel": "einsum_dense",
        "self_attention/attention_output/kernel": "einsum_dense",
        "feedforward_intermediate_dense/kernel": "dense",
        "feedforward_output_dense/kernel": "dense",
    }
    names = [k.name for k in kernels]
    for suffix, kind in expected.items():
        found = _by_suffix(kernels, suffix)
        assert len(found) == 2, (suffix, names)  # one per block
        assert {k.kind for k in found} == {kind}, suffix
        assert {k.name.split("/")[0] for k in found} == {"block_0", "block_1"}, suffix
    (embedding,) = _by_suffix(kernels, "token_embedding/embeddings")
    assert embedding.kind == "embedding" and embedding.shape == (VOCAB, 16)
    extra = 1 if family == "transformer_classifier" else 0  # the head
    assert len(kernels) == 2 * len(expected) + 1 + extra, names
    if extra:
        assert _by_suffix(kernels, "head/kernel")[0].kind == "dense"
    assert names == sorted(names)
    # Each is the layer's own variable, and attention's in_axes match the equations.
    for kernel in kernels:
        own = kernel.layer.embeddings if kernel.kind == "embedding" else kernel.layer.kernel
        assert kernel.variable is own
    assert {k.in_axes for k in _by_suffix(kernels, "attention_output/kernel")} == {2}
    assert {k.in_axes for k in _by_suffix(kernels, "query/kernel")} == {1}
    # QAT's kinds leave the embedding out.
    dense_only = find_kernels(model, ("dense", "einsum_dense"))
    assert [k.name for k in dense_only] == [k.name for k in kernels if k.kind != "embedding"]


def test_find_kernels_covers_cnn_and_mlp():
    cnn = find_kernels(_classifier("cnn_classifier"))
    convs = [k for k in cnn if k.kind == "conv1d"]
    assert len(convs) == 3 and all(k.in_axes == 2 for k in convs), [k.name for k in cnn]
    assert [k.shape[0] for k in convs] == [3, 4, 5]  # the default conv widths
    assert {k.kind for k in cnn} == {"conv1d", "dense", "embedding"}
    mlp = find_kernels(_classifier("mlp_classifier"))
    dense = [k.name for k in mlp if k.kind == "dense"]
    assert dense == ["head/kernel", "hidden_0/kernel", "hidden_1/kernel"]
    assert {k.kind for k in mlp} == {"dense", "embedding"}


def test_find_kernels_needs_a_built_model():
    from tfllm.models.gpt import GPT

    with pytest.raises(ValueError, match="build the model first"):
        find_kernels(
            GPT(
                vocab_size=VOCAB,
                max_length=8,
                num_layers=1,
                num_heads=2,
                hidden_dim=8,
                intermediate_dim=16,
            )
        )


# ------------------------------------------------------- the [out, in] view
def _reference_contraction(kernel, value: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(layer's own contraction of x with `value`, x flattened to [..., in]) for one kernel."""
    if kernel.kind == "dense":
        x = rng.normal(size=(2, value.shape[0])).astype(np.float32)
        return x @ value, x
    if kernel.kind == "einsum_dense":
        x = rng.normal(size=(2, 3, *value.shape[: kernel.in_axes])).astype(np.float32)
        y = keras.ops.convert_to_numpy(keras.ops.einsum(kernel.layer.equation, x, value))
        return y.reshape(2, 3, -1), x.reshape(2, 3, -1)
    if kernel.kind == "conv1d":
        width, channels, _ = value.shape
        x = rng.normal(size=(1, width, channels)).astype(np.float32)
        y = tf.nn.conv1d(x, value, stride=1, padding="VALID").numpy()  # one output position
        return y.reshape(1, -1), x.reshape(1, -1)
    # embedding: the tied head's logits = h · Eᵀ
    h = rng.normal(size=(2, value.shape[1])).astype(np.float32)
    return h @ value.T, h


@pytest.mark.parametrize("family", FAMILIES)
def test_to_out_in_round_trips_and_is_the_matrix_the_layer_applies(family):
    rng = np.random.default_rng(0)
    kernels = find_kernels(_model(family))
    assert kernels
    for kernel in kernels:
        value = rng.normal(size=kernel.shape).astype(np.float32)
        matrix = kernel.to_out_in(tf.constant(value))
        assert tuple(matrix.shape) == kernel.matrix_shape, kernel.name
        assert int(np.prod(kernel.matrix_shape)) == value.size
        back = kernel.from_out_in(matrix).numpy()
        np.testing.assert_array_equal(back, value, err_msg=kernel.name)  # exact
        y, x = _reference_contraction(kernel, value, rng)
        np.testing.assert_allclose(x @ matrix.numpy().T, y, atol=1e-5, err_msg=kernel.name)
    assert {k.kind for k in kernels} <= set(PRUNABLE_KINDS)


# ----------------------------------------------------- driving the plugin
def _train_step(model, optimizer, plugin):
    """One optimizer update then `after_update`, in one graph (as `Trainer` does)."""

    @tf.function
    def step(inputs, targets):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply([tf.convert_to_tensor(g) for g in grads], model.trainable_variables)
        plugin.after_update()
        return loss

    return step


def _plugin_on_gpt(spec: PruningSpec, learning_rate: float = 1e-2):
    model = _gpt()
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    plugin = PruningPlugin(spec)
    plugin.setup(model, optimizer)
    return model, optimizer, plugin


def _batch(rng):
    return (
        tf.constant(rng.integers(0, VOCAB, size=(4, 16)), tf.int32),
        tf.constant(rng.integers(0, VOCAB, size=(4, 16)), tf.int32),
    )


def test_sparsity_follows_the_schedule_exactly_and_masks_survive_updates():
    spec = PruningSpec(0.8, end_step=20, frequency=5)
    model, optimizer, plugin = _plugin_on_gpt(spec)
    schedule = spec.tfmot_schedule()
    rng = np.random.default_rng(0)
    message = plugin.initialize(model)
    assert f"Pruning {len(plugin.kernels)} kernels" in message
    kinds = {k.kind for k in plugin.kernels}
    assert kinds == {"dense", "einsum_dense", "embedding"}, kinds

    def zeros():
        return {k.name: k.variable.numpy() == 0 for k in plugin.kernels}

    previous = zeros()  # step 0: polynomial sparsity 0, nothing pruned
    assert not any(z.any() for z in previous.values())
    step_fn = _train_step(model, optimizer, plugin)
    prune_steps = []
    for expected_step in range(1, 26):
        step_fn(*_batch(rng))
        step = int(optimizer.iterations.numpy())
        assert step == expected_step
        should_prune, sparsity = schedule(tf.constant(step, tf.int64))
        current = zeros()
        for kernel, mask in zip(plugin.kernels, plugin.trackable().masks, strict=True):
            now = current[kernel.name]
            # The mask is what zeroes the weights, position for position.
            np.testing.assert_array_equal(mask.numpy() == 0, now, err_msg=kernel.name)
            if bool(should_prune):
                size = now.size
                keep = int(tf.maximum(tf.math.round(float(size) * (1.0 - sparsity)), 1.0))
                assert int(now.sum()) == size - keep, (step, kernel.name, float(sparsity))
            else:  # masked weights stay exactly 0 through the optimizer's update
                np.testing.assert_array_equal(
                    now, previous[kernel.name], err_msg=f"step {step} {kernel.name}"
                )
        if bool(should_prune):
            prune_steps.append(step)
        previous = current
    assert prune_steps == [5, 10, 15, 20]
    total = sum(z.size for z in previous.values())
    assert sum(int(z.sum()) for z in previous.values()) / total == pytest.approx(0.8, abs=0.01)
    summary = plugin.summary(model)
    assert summary["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert summary["pruned_weights"] == sum(int(z.sum()) for z in previous.values())


def test_two_of_four_zeroes_the_smallest_two_of_every_group_and_keeps_them():
    spec = PruningSpec(0.5, m_by_n=(2, 4))
    model, optimizer, plugin = _plugin_on_gpt(spec)
    kernels = plugin.kernels
    assert {k.kind for k in kernels} == {"dense", "einsum_dense", "embedding"}
    assert any("attention_output" in k.name for k in kernels)
    start = {k.name: k.to_out_in(tf.constant(k.variable.numpy())).numpy() for k in kernels}
    assert "2:4 structured" in plugin.initialize(model)

    def groups(kernel):
        matrix = kernel.to_out_in(tf.constant(kernel.variable.numpy())).numpy()
        out, inp = kernel.matrix_shape
        assert inp % 4 == 0, kernel.name  # every group is a full group of 4
        return matrix.reshape(out, inp // 4, 4)

    expected = {}
    for kernel in kernels:
        grouped = groups(kernel)
        assert ((grouped == 0).sum(-1) >= 2).all(), kernel.name
        # Independent reference: the two smallest magnitudes of each group go.
        reference = np.abs(start[kernel.name]).reshape(grouped.shape)
        smallest = np.argsort(reference, axis=-1)[..., :2]
        want = np.zeros(grouped.shape, bool)
        np.put_along_axis(want, smallest, True, axis=-1)
        np.testing.assert_array_equal(grouped == 0, want, err_msg=kernel.name)
        expected[kernel.name] = want

    step_fn = _train_step(model, optimizer, plugin)
    rng = np.random.default_rng(1)
    for _ in range(3):
        step_fn(*_batch(rng))
    for kernel in kernels:
        grouped = groups(kernel)
        assert ((grouped == 0).sum(-1) >= 2).all(), kernel.name
        np.testing.assert_array_equal(grouped == 0, expected[kernel.name], err_msg=kernel.name)
        assert (grouped != start[kernel.name].reshape(grouped.shape)).any()  # it did train


# ------------------------------------------------------------- bad specs
@pytest.mark.parametrize("text", ["4:2", "2:2", "0:4", "x", "2:4:8", "two:four"])
def test_parse_m_by_n_rejects(text):
    with pytest.raises(ConfigError, match="--m_by_n") as error:
        parse_m_by_n(text)
    assert repr(text) in str(error.value)


def test_parse_m_by_n_accepts():
    assert parse_m_by_n("2:4") == (2, 4)
    assert parse_m_by_n("1:8") == (1, 8)
    assert parse_m_by_n("") is None


def _compress_config(**compress):
    from tfllm.config import base_config

    config = base_config()
    config.train.num_steps = 40
    config.compress.update(dict(method="prune", **compress))
    return config


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        (dict(sparsity=1.0), "--sparsity"),
        (dict(sparsity=-0.1), "--sparsity"),
        (dict(schedule="cubic"), "--schedule"),
        (dict(m_by_n="4:2"), "--m_by_n"),
        (dict(m_by_n="x"), "--m_by_n"),
    ],
)
def test_spec_from_config_rejects(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        spec_from_config(_compress_config(**settings))


def test_spec_from_config_defaults():
    spec = spec_from_config(_compress_config(sparsity=0.6))
    # The ramp ends at 3/4 of the 40 steps; masks are updated 10 times on the way.
    assert spec == PruningSpec(0.6, "polynomial", 0, 30, 3, None)
    spec = spec_from_config(_compress_config(m_by_n="2:4", prune_frequency=7))
    assert (spec.m_by_n, spec.frequency) == ((2, 4), 7)


# ------------------------------------------------- a real run, resumed
def _listing(root: str) -> dict[str, float]:
    return {
        os.path.relpath(os.path.join(d, f), root): os.path.getmtime(os.path.join(d, f))
        for d, _, files in os.walk(root)
        for f in files
    }


@pytest.fixture(scope="module")
def pruned(trained_classifier, tmp_path_factory) -> str:
    """The session's CNN classifier pruned to 80% in 20 steps, in-process."""
    from tfllm.compress.run import CompressOptions, compress_workdir

    output = str(tmp_path_factory.mktemp("pruned") / "out")
    before = _listing(trained_classifier)
    record = compress_workdir(
        trained_classifier, output, CompressOptions(method="prune", sparsity=0.8, steps=20)
    )
    assert _listing(trained_classifier) == before  # the source is only read
    assert record["method"] == "prune"
    return output


def _checkpoint_masks(output: str):
    latest = tf.train.latest_checkpoint(os.path.join(output, "checkpoints"))
    assert latest and latest.endswith("ckpt-20"), latest
    reader = tf.train.load_checkpoint(latest)
    keys = sorted(
        (k for k in reader.get_variable_to_shape_map() if k.startswith(MASK_PREFIX)),
        key=lambda k: int(k[len(MASK_PREFIX) :].split("/")[0]),
    )
    return latest, [reader.get_tensor(k) for k in keys]


def test_saved_weights_are_zero_exactly_where_the_checkpointed_masks_are(pruned):
    from tfllm.inference.loading import load_trained

    _, masks = _checkpoint_masks(pruned)
    kernels = find_kernels(load_trained(pruned).model)
    assert len(masks) == len(kernels) == 5  # 3 convs, the head, the embedding
    for kernel, mask in zip(kernels, masks, strict=True):
        value = kernel.variable.numpy()
        assert mask.shape == value.shape, kernel.name
        assert set(np.unique(mask)) == {0.0, 1.0}, kernel.name
        np.testing.assert_array_equal(value == 0, mask == 0, err_msg=kernel.name)
        assert (value == 0).mean() >= 0.79, kernel.name


def test_a_fresh_restore_brings_the_masks_back(pruned):
    from tfllm.config import load_workdir_config
    from tfllm.data.labels import LabelVocab
    from tfllm.data.tokenizer import Tokenizer
    from tfllm.models import build_model
    from tfllm.training.optim import create_optimizer

    latest, masks = _checkpoint_masks(pruned)
    config = load_workdir_config(pruned)
    assert config.compress.method == "prune"
    vocab = Tokenizer.load(os.path.join(pruned, "tokenizer")).vocab_size
    model = build_model(config.model, vocab, LabelVocab.load(pruned).num_classes)
    optimizer = create_optimizer(config.train, model)
    optimizer.build(model.trainable_variables)
    plugin = PruningPlugin(spec_from_config(config))
    plugin.setup(model, optimizer)
    fresh = [m.numpy() for m in plugin.trackable().masks]
    assert all((m == 1).all() for m in fresh)  # before the restore: nothing masked
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, pruning=plugin.trackable())
    checkpoint.restore(latest).assert_existing_objects_matched()
    assert int(optimizer.iterations.numpy()) == 20
    restored = [m.numpy() for m in plugin.trackable().masks]
    assert len(restored) == len(masks)
    for kernel, mask, saved in zip(plugin.kernels, restored, masks, strict=True):
        np.testing.assert_array_equal(mask, saved, err_msg=kernel.name)
        np.testing.assert_array_equal(kernel.variable.numpy() == 0, saved == 0)
    # A resumed step re-applies the restored masks (the schedule ended at step 15).
    plugin.after_update()
    for kernel, saved in zip(plugin.kernels, masks, strict=True):
        np.testing.assert_array_equal(kernel.variable.numpy() == 0, saved == 0)


def test_the_output_is_a_workdir_with_a_compression_record(pruned, trained_classifier):
    from tfllm.compress.pruning import model_sparsity
    from tfllm.inference.loading import load_trained

    with open(os.path.join(pruned, "compression.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["method"] == "prune"
    assert record["source"] == os.path.abspath(trained_classifier)
    assert record["settings"]["sparsity"] == 0.8 and record["steps"] == 20
    assert record["sparsity"] >= 0.79
    measured = model_sparsity(load_trained(pruned).model)
    assert record["sparsity"] == measured["sparsity"]
    assert sorted(record["sparsity_by_layer"].values()) == sorted(
        v["sparsity"] for v in measured["layers"].values()
    )
    assert min(record["sparsity_by_layer"].values()) >= 0.79
    assert os.path.isfile(os.path.join(pruned, "labels.json"))
    proc = run_cli("evaluate", f"--workdir={pruned}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy" in proc.stdout


def test_the_record_names_each_kernel_as_the_model_config_does(pruned):
    """Per-layer keys must not depend on how many models the process built before.

    `compression_record` measures a reloaded model whose Keras name gets an
    instance suffix (`cnn_classifier_1`, `_2`, ...), so the same run recorded
    from the CLI and from the pipeline (in-process) would name its layers
    differently.
    """
    from tfllm.config import load_workdir_config

    with open(os.path.join(pruned, "compression.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert load_workdir_config(pruned).model.name == "cnn_classifier"
    assert sorted(record["sparsity_by_layer"]) == [
        layer  # below the model: no `cnn_classifier_<n>/` prefix
        for layer in (
            "conv_0/kernel",
            "conv_1/kernel",
            "conv_2/kernel",
            "head/kernel",
            "token_embedding/embeddings",
        )
    ]


def test_embeddings_can_be_kept_dense():
    """`--noprune_embeddings`: every other kernel is pruned, the embedding (LM head) is not."""

    model = _gpt()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    plugin = PruningPlugin(PruningSpec(0.5, end_step=1, frequency=1, embeddings=False))
    plugin.setup(model, optimizer)
    assert plugin.kernels and all(k.kind != "embedding" for k in plugin.kernels)
    assert len(plugin.kernels) == len(find_kernels(model)) - 1
    optimizer.iterations.assign(1)
    plugin.after_update()
    for kernel in find_kernels(model):
        zeros = float(np.mean(kernel.variable.numpy() == 0))
        assert zeros == (0.0 if kernel.kind == "embedding" else pytest.approx(0.5, abs=0.02))
