"""Tests for the text classifiers: the classifier contract over every family, then
per-family sections, each running the shared model harness (tests/harness.py).

The shared contract: int `[B, T]` ids with 0 as right padding and bos (2) at
position 0 -> float32 `[B, num_classes]` logits, independent of how much
padding follows a row, finite even for an all-padding row, and enough capacity
to learn a trivially separable task with plain `compile` + `fit`. Config,
keras-serialization, mixed-precision, checkpoint and `.keras` round trips are
the harness's (`ModelTests`).
"""

from __future__ import annotations

from typing import Any

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from harness import ModelTests

from tfllm.errors import ConfigError
from tfllm.models import (
    AVAILABLE,
    BertClassifier,
    CNNClassifier,
    Llama,
    LlamaClassifier,
    MLPClassifier,
    TransformerClassifier,
    build_model,
)
from tfllm.models.bert import BertEncoder
from tfllm.models.gpt import GPT

VOCAB = 30
CLASSES = 3
MAX_LENGTH = 40
BOS = 2

TINY_TRANSFORMER = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
SHAPE = dict(vocab_size=VOCAB, num_classes=CLASSES, max_length=MAX_LENGTH)

# family -> (class, tiny init kwargs)
FAMILIES: dict[str, tuple[type[keras.Model], dict[str, Any]]] = {
    "transformer": (TransformerClassifier, {**SHAPE, **TINY_TRANSFORMER, "dropout": 0.0}),
    "cnn": (CNNClassifier, {**SHAPE, "embedding_dim": 16, "conv_filters": 8}),
    "cnn_flatten": (
        CNNClassifier,
        {
            **SHAPE,
            "embedding_dim": 16,
            "conv_widths": [3],
            "conv_filters": 8,
            "pooling": "max_pool_flatten",
        },
    ),
    "mlp": (MLPClassifier, {**SHAPE, "embedding_dim": 16, "hidden_dims": [32, 32]}),
    "bert": (BertClassifier, {**SHAPE, **TINY_TRANSFORMER, "dropout": 0.0, "pooling": "mean"}),
    "llama": (LlamaClassifier, {**SHAPE, **TINY_TRANSFORMER, "num_kv_heads": 1}),
}


def make(family: str, seed: int = 1, **overrides: object) -> keras.Model:
    cls, kwargs = FAMILIES[family]
    keras.utils.set_random_seed(seed)
    model = cls(**{**kwargs, **overrides})
    model(tf.zeros([1, MAX_LENGTH], tf.int32))
    return model


def rows(lengths: list[int], length: int, seed: int = 0) -> np.ndarray:
    """bos + random real tokens (ids >= 3), right-padded with 0 to `length`."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, 0] = BOS
        ids[i, 1:n] = rng.integers(3, VOCAB, n - 1)
    return ids


class ClassifierTests(ModelTests):
    """The harness for one classifier family: `family` names its FAMILIES entry."""

    family: str
    # Rows of 2, 5 and 12 real tokens, padded to 12 (< MAX_LENGTH).
    input_data = rows([2, 5, 12], 12)
    expected_output_shape = (3, CLASSES)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.model_class, cls.init_kwargs = FAMILIES[cls.family]


families = pytest.mark.parametrize("family", list(FAMILIES))


@families
def test_common_classifier_attributes(family: str) -> None:
    model = make(family)
    assert (model.num_classes, model.max_length, model.vocab_size) == (CLASSES, MAX_LENGTH, VOCAB)


@families
def test_logits_do_not_depend_on_padding(family: str) -> None:
    model = make(family)
    ids = rows([1, 2, 4, 10], 10)
    wide = np.pad(ids, [[0, 0], [0, MAX_LENGTH - 10]])
    base = model(tf.constant(ids)).numpy()
    np.testing.assert_allclose(model(tf.constant(wide)).numpy(), base, atol=1e-5)
    # Rows shorter than the widest convolution, in a batch padded only to them.
    short = rows([1, 2], 2)
    np.testing.assert_allclose(
        model(tf.constant(short)).numpy(),
        model(tf.constant(np.pad(short, [[0, 0], [0, 30]]))).numpy(),
        atol=1e-5,
    )
    # The traced graph with a dynamic length (as in training and the SavedModel).
    traced = tf.function(model, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    np.testing.assert_allclose(traced(tf.constant(ids)).numpy(), base, atol=1e-5)
    np.testing.assert_allclose(traced(tf.constant(wide)).numpy(), base, atol=1e-5)


@families
def test_all_padding_row_gives_finite_logits(family: str) -> None:
    model = make(family)
    ids = np.zeros((2, MAX_LENGTH), np.int32)
    ids[1, :4] = [BOS, 5, 6, 7]
    assert np.isfinite(model(tf.constant(ids)).numpy()).all()
    assert np.isfinite(model(tf.zeros([1, 1], tf.int32)).numpy()).all()


def marker_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random rows holding one marker token (5, 6 or 7); the class is which."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 17, n)
    ids = rows(list(lengths), 16, seed=seed)
    ids[ids == 5] = 8
    ids[ids == 6] = 9
    ids[ids == 7] = 10
    labels = rng.integers(0, CLASSES, n)
    ids[np.arange(n), rng.integers(1, lengths)] = 5 + labels
    return ids, labels.astype(np.int32)


@families
def test_learns_a_separable_task(family: str) -> None:
    model = make(family)
    x, y = marker_task(1536, seed=0)
    x_test, y_test = marker_task(256, seed=1)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    accuracy = np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert accuracy > 0.95, accuracy


# ---- TransformerClassifier ---------------------------------------------------------------


class TestTransformerClassifierHarness(ClassifierTests):
    family = "transformer"


def tiny_lm(max_length: int = 64, **overrides: object) -> GPT:
    keras.utils.set_random_seed(7)
    lm = GPT(VOCAB, max_length, **{**TINY_TRANSFORMER, **overrides})
    lm(tf.zeros([1, max_length], tf.int32))
    return lm


def test_load_backbone_from_gpt_copies_every_backbone_weight() -> None:
    lm = tiny_lm()
    model = make("transformer")
    head = [w.numpy() for w in model.head.weights]
    model.load_backbone_from(lm)
    np.testing.assert_array_equal(
        model.position_embedding.weights[0].numpy(),
        lm.position_embedding.weights[0].numpy()[:MAX_LENGTH],
    )
    pairs = [(model.token_embedding, lm.token_embedding), (model.final_norm, lm.final_norm)]
    pairs += list(zip(model.blocks, lm.blocks, strict=True))
    copied = 1
    for ours, theirs in pairs:
        assert len(ours.weights) == len(theirs.weights) > 0
        for a, b in zip(ours.weights, theirs.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
            copied += 1
    assert copied == len(lm.weights)
    for before, after in zip(head, model.head.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    # The backbone layers are exactly those copied.
    backbone = {id(w) for layer in model.backbone_layers() for w in layer.weights}
    assert backbone == {id(w) for w in model.weights} - {id(w) for w in model.head.weights}


@pytest.mark.parametrize(
    ("lm_overrides", "message"),
    [
        (dict(hidden_dim=32), "hidden_dim differs: the classifier has 16, the LM has 32"),
        (dict(num_layers=3), "num_layers differs: the classifier has 2, the LM has 3"),
        (dict(intermediate_dim=64), "intermediate_dim differs"),
        (dict(max_length=20), "max_length 40 exceeds the LM's 20"),
    ],
)
def test_load_backbone_rejects_a_mismatching_lm(lm_overrides: dict, message: str) -> None:
    lm = tiny_lm(**lm_overrides)
    with pytest.raises(ValueError, match=message):
        make("transformer").load_backbone_from(lm)


def test_causal_attention_and_each_pooling_give_different_logits() -> None:
    ids = tf.constant(rows([4, 9, 12], 12))
    outputs = {}
    for pooling in ("mean", "cls", "last"):
        for causal in (False, True):
            outputs[pooling, causal] = make("transformer", pooling=pooling, causal=causal)(ids)
    keys = list(outputs)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if a[0] == "cls" and b[0] == "cls":
                continue  # causal "cls" sees only the bos token: compared below
            assert np.abs(outputs[a].numpy() - outputs[b].numpy()).max() > 1e-5, (a, b)
    # Causal attention: position 0 attends only to itself, so "cls" cannot see the row.
    cls_causal = outputs["cls", True].numpy()
    np.testing.assert_allclose(cls_causal, np.broadcast_to(cls_causal[:1], cls_causal.shape))


def test_freeze_backbone_makes_the_right_variables_non_trainable() -> None:
    model = make("transformer")
    model.freeze_backbone(1, embeddings=True)
    trainable = {v.path for v in model.trainable_variables}
    frozen = [model.token_embedding, model.position_embedding, model.block_0]
    for layer in frozen:
        assert not {w.path for w in layer.weights} & trainable, layer.name
    for layer in (model.block_1, model.final_norm, model.head):
        assert {w.path for w in layer.weights} <= trainable, layer.name
    other = make("transformer")
    other.freeze_backbone(2, embeddings=False)
    assert other.token_embedding.trainable and not other.block_1.trainable
    with pytest.raises(ValueError, match="num_blocks"):
        other.freeze_backbone(3, embeddings=False)


def test_transformer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        make("transformer", pooling="max")
    with pytest.raises(ValueError, match="divisible"):
        make("transformer", num_heads=3)
    with pytest.raises(ValueError, match="num_classes"):
        TransformerClassifier(VOCAB, 1, MAX_LENGTH, **TINY_TRANSFORMER)


# ---- CNNClassifier ------------------------------------------------------------------------


class TestCNNClassifierHarness(ClassifierTests):
    family = "cnn"


class TestCNNFlattenClassifierHarness(ClassifierTests):
    family = "cnn_flatten"


def test_cnn_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one width"):
        make("cnn_flatten", conv_widths=[3, 4])
    with pytest.raises(ValueError, match="pooling must be one of"):
        make("cnn", pooling="average")
    with pytest.raises(ValueError, match="conv_filters must be a positive int"):
        make("cnn", conv_filters=0)
    with pytest.raises(ValueError, match="conv_widths"):
        make("cnn", conv_widths=[3, -1])
    with pytest.raises(ValueError, match="conv_widths"):
        make("cnn", conv_widths=[])


def test_cnn_flatten_head_sees_max_length_positions() -> None:
    model = make("cnn_flatten", pool_size=4)
    assert model.head.kernel.shape == (MAX_LENGTH // 4 * 8, CLASSES)
    assert model(tf.constant(rows([3], 3))).shape == (1, CLASSES)


# ---- MLPClassifier ------------------------------------------------------------------------


class TestMLPClassifierHarness(ClassifierTests):
    family = "mlp"


# ---- BertClassifier -----------------------------------------------------------------------


class TestBertClassifierHarness(ClassifierTests):
    family = "bert"


def tiny_encoder(max_length: int = 64, **overrides: object) -> BertEncoder:
    keras.utils.set_random_seed(7)
    encoder = BertEncoder(VOCAB, max_length, **{**TINY_TRANSFORMER, **overrides})
    encoder(tf.zeros([1, 8], tf.int32))
    return encoder


def test_bert_load_backbone_from_reproduces_the_encoder_exactly() -> None:
    encoder = tiny_encoder()
    model = make("bert")
    head = [w.numpy() for w in model.head.weights]
    model.load_backbone_from(encoder)
    ids = tf.constant(rows([3, 7, 12], 12))
    np.testing.assert_array_equal(model.encoder(ids).numpy(), encoder(ids).numpy())
    for before, after in zip(head, model.head.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    np.testing.assert_array_equal(
        model.encoder.position_embedding.weights[0].numpy(),
        encoder.position_embedding.weights[0].numpy()[:MAX_LENGTH],
    )
    # Every encoder weight (the unused pooler's too) was copied; the pooler stays frozen.
    for ours, theirs in zip(model.encoder.weights, encoder.weights, strict=True):
        if "position_embedding" not in ours.path:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    trainable = {id(v) for v in model.trainable_variables}
    assert not any(id(w) in trainable for w in model.encoder.pooler.weights)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_dim=32), "hidden_dim differs: the classifier has 16, the encoder 32"),
        (dict(num_layers=3), "num_layers differs"),
        (dict(activation="relu"), "activation differs"),
        (dict(layer_norm_epsilon=1e-5), "layer_norm_epsilon differs"),
        (dict(max_length=20), "max_length 40 exceeds the encoder's 20"),
    ],
)
def test_bert_load_backbone_rejects_a_mismatching_encoder(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make("bert").load_backbone_from(tiny_encoder(**overrides))


def test_bert_poolings_differ_and_freezing_covers_the_encoder() -> None:
    ids = tf.constant(rows([4, 9, 12], 12))
    logits = {p: make("bert", pooling=p)(ids).numpy() for p in ("mean", "cls", "last")}
    assert np.abs(logits["mean"] - logits["cls"]).max() > 1e-5
    assert np.abs(logits["cls"] - logits["last"]).max() > 1e-5
    model = make("bert")
    model.freeze_backbone(1, embeddings=True)
    trainable = {v.path for v in model.trainable_variables}
    encoder = model.encoder
    for layer in (encoder.token_embedding, encoder.segment_embedding, encoder.block_0):
        assert not {w.path for w in layer.weights} & trainable, layer.name
    assert {w.path for w in encoder.block_1.weights} <= trainable
    with pytest.raises(ValueError, match="pooling must be one of"):
        make("bert", pooling="max")


# ---- LlamaClassifier ----------------------------------------------------------------------


class TestLlamaClassifierHarness(ClassifierTests):
    family = "llama"


def tiny_decoder(**overrides: object) -> Llama:
    keras.utils.set_random_seed(7)
    kwargs = {**TINY_TRANSFORMER, "num_kv_heads": 1, "max_length": 256, **overrides}
    decoder = Llama(VOCAB, **kwargs)
    decoder(tf.zeros([1, 8], tf.int32))
    return decoder


def test_llama_classifier_reads_the_decoders_last_real_token() -> None:
    """After `load_backbone_from`, the pooled state is the imported LM's final-normed
    hidden state at the row's last real token, the LM run on the unpadded row alone."""
    decoder = tiny_decoder()
    model = make("llama")
    head = [w.numpy() for w in model.head.weights]
    model.load_backbone_from(decoder)
    for ours, theirs in zip(model.decoder.weights, decoder.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    for before, after in zip(head, model.head.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    ids = rows([3, 7, 12], 12)
    ids[1, 4] = 0  # an id 0 inside a row is a token, not the row's end
    logits = model(tf.constant(ids)).numpy()
    for i, n in enumerate([3, 7, 12]):
        alone = tf.constant(ids[i : i + 1, :n])
        state = decoder.final_norm(decoder.residual_stream(alone))[0, -1]
        expected = model.head(tf.cast(state[None], tf.float32)).numpy()[0]
        np.testing.assert_allclose(logits[i], expected, rtol=1e-5, atol=1e-6)
    # The LM's own logits come from the same stream (residual_stream is call's trunk).
    np.testing.assert_allclose(
        decoder(tf.constant(ids)).numpy(),
        decoder._logits(decoder.residual_stream(tf.constant(ids))).numpy(),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_dim=32), "hidden_dim differs: the classifier has 16, the decoder 32"),
        (dict(num_kv_heads=2), "num_kv_heads differs"),
        (dict(rope_theta=500.0), "rope_theta differs"),
        (dict(tie_embeddings=False), "tie_embeddings differs"),
    ],
)
def test_llama_load_backbone_rejects_a_mismatching_decoder(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make("llama").load_backbone_from(tiny_decoder(**overrides))


def test_llama_poolings_untied_head_and_freezing() -> None:
    ids = tf.constant(rows([4, 9, 12], 12))
    logits = {p: make("llama", pooling=p)(ids).numpy() for p in ("mean", "last")}
    assert np.abs(logits["mean"] - logits["last"]).max() > 1e-5
    with pytest.raises(ValueError, match="pooling must be one of"):
        make("llama", pooling="cls")  # a causal model's first state has seen only bos
    untied = make("llama", tie_embeddings=False)
    trainable = {id(v) for v in untied.trainable_variables}
    assert id(untied.decoder.token_embedding.reverse_embeddings) not in trainable
    assert id(untied.decoder.token_embedding.embeddings) in trainable
    model = make("llama")
    model.freeze_backbone(1, embeddings=True)
    trainable = {v.path for v in model.trainable_variables}
    decoder = model.decoder
    for layer in (decoder.token_embedding, decoder.block_0):
        assert not {w.path for w in layer.weights} & trainable, layer.name
    assert {w.path for w in decoder.block_1.weights} <= trainable


# ---- build_model --------------------------------------------------------------------------


def classifier_config(name: str, **overrides: object) -> ml_collections.ConfigDict:
    config = dict(
        name=name,
        max_length=16,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        dropout=0.0,
        pooling="last",
        causal=True,
        embedding_dim=8,
        conv_widths=[2, 3],
        conv_filters=4,
        cnn_pooling="global_max",
        pool_size=2,
        mlp_hidden_dims=[8],
    )
    return ml_collections.ConfigDict({**config, **overrides})


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("transformer_classifier", TransformerClassifier),
        ("cnn_classifier", CNNClassifier),
        ("mlp_classifier", MLPClassifier),
        ("bert_classifier", BertClassifier),
        ("llama_classifier", LlamaClassifier),
    ],
)
def test_build_model_builds_each_classifier(name: str, cls: type) -> None:
    model = build_model(classifier_config(name), vocab_size=VOCAB, num_classes=4)
    assert isinstance(model, cls) and model.built and model.count_params() > 0
    assert (model.num_classes, model.max_length, model.vocab_size) == (4, 16, VOCAB)
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        build_model(classifier_config(name), vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        build_model(classifier_config(name), vocab_size=VOCAB, num_classes=1)


def test_build_model_maps_config_keys_and_defaults() -> None:
    transformer = build_model(classifier_config("transformer_classifier"), VOCAB, 2)
    assert (transformer.pooling, transformer.causal, transformer.num_layers) == ("last", True, 1)
    cnn = build_model(
        classifier_config("cnn_classifier", cnn_pooling="max_pool_flatten", conv_widths=[3]),
        VOCAB,
        2,
    )
    assert (cnn.pooling, cnn.conv_widths, cnn.conv_filters) == ("max_pool_flatten", [3], 4)
    assert build_model(classifier_config("mlp_classifier"), VOCAB, 2).hidden_dims == [8]
    # An older config without the classifier keys gets the classes' defaults.
    old = ml_collections.ConfigDict(dict(name="mlp_classifier", max_length=16, dropout=0.0))
    assert build_model(old, VOCAB, 2).hidden_dims == [256, 256]
    with pytest.raises(ConfigError, match="exactly one width"):
        build_model(classifier_config("cnn_classifier", cnn_pooling="max_pool_flatten"), VOCAB, 2)


def test_build_model_lists_every_model_for_an_unknown_name() -> None:
    assert AVAILABLE == (
        "gpt", "transformer_classifier", "cnn_classifier", "mlp_classifier", "llama", "bert",
        "bert_classifier", "llama_classifier",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown model 'x'.*mlp_classifier.*llama, bert"):
        build_model(classifier_config("x"), vocab_size=VOCAB, num_classes=2)
