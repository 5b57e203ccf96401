"""The shared model test harness: every tfllm model class runs the same checks.

In the spirit of keras-hub's `TestCase` (`run_serialization_test`,
`run_precision_test`, `run_model_saving_test`): each check takes the model
class, tiny init kwargs and an input batch, builds what it needs itself, and
asserts one contract a tfllm model keeps:

- `run_model_test`: the forward pass gives float32 outputs of the expected
  shape, with every weight built;
- `run_config_round_trip_test`: `get_config` holds every init argument and
  survives JSON; `from_config` gives a model with the same config and, on the
  same weights, bit-identical outputs;
- `run_serialization_test`: the above, plus keras `serialize_keras_object` /
  `deserialize_keras_object` (through JSON) where the class registers itself;
- `run_precision_test`: under `mixed_bfloat16` and `mixed_float16`, variables
  stay float32, the compute dtype is the policy's, and the outputs are finite
  and close to the float32 model's on the same weights;
- `run_model_saving_test`: a `tf.train.Checkpoint` (how tfllm checkpoints)
  restores every variable into a fresh, differently initialised model, giving
  identical outputs; a `.keras` file loads back to the same outputs;
- `run_remat_test`: with block checkpointing on (`tfllm.models.remat`), the
  loss and every gradient equal the plain model's on the same weights, inside
  a `tf.function` as training runs it (a model without transformer blocks
  must have no `blocks` at all);
- `run_cache_test`: for a model with a KV cache (`init_cache(batch)` and
  `call_with_cache(ids, cache, index, **kwargs) -> (logits, cache)`), a prefill
  then one-token decode steps give the full forward pass's logits.

`ModelTests` runs the first six as pytest tests: a model's test file declares
a `class TestXxx(ModelTests)` with `model_class`, `init_kwargs`, `input_data`
and `expected_output_shape`, and a new model family (an imported Llama or
BERT) gets the whole contract by doing the same.

Keep the kwargs tiny (hidden 16-32, 1-2 layers, sequences <= 16): the suite
runs these for every model class.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Largest |mixed - float32| output difference allowed, as a fraction of the
# float32 outputs' largest magnitude: about 8 rounding steps of the compute
# dtype (bfloat16 keeps 8 significant bits, eps 2^-8 = 0.0039; float16 11 bits,
# eps 2^-11 = 0.00049). Measured on the tiny models of tests/models: at most
# 0.0038 (bfloat16) and 0.00073 (float16), both the 2-block GPT's.
PRECISION_TOLERANCE = {"mixed_bfloat16": 3e-2, "mixed_float16": 5e-3}


@contextmanager
def dtype_policy(policy: str) -> Iterator[keras.DTypePolicy]:
    """The global Keras dtype policy set to `policy` inside the block (restored after)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(
    cls: type[keras.Model], init_kwargs: dict[str, Any], input_data: Any, seed: int = 1
) -> keras.Model:
    """`cls(**init_kwargs)` with seeded initialisation, built by a call on `input_data`."""
    keras.utils.set_random_seed(seed)
    model = cls(**init_kwargs)
    model(as_tensor(input_data))
    return model


def as_tensor(data: Any) -> Any:
    return tf.nest.map_structure(tf.convert_to_tensor, data)


def outputs(model: keras.Model, input_data: Any, **call_kwargs: Any) -> list[np.ndarray]:
    """The model's outputs on `input_data`, flattened to numpy arrays."""
    result = model(as_tensor(input_data), **call_kwargs)
    return [np.asarray(t) for t in tf.nest.flatten(result)]


def assert_outputs_equal(a: keras.Model, b: keras.Model, input_data: Any) -> None:
    for x, y in zip(outputs(a, input_data), outputs(b, input_data), strict=True):
        np.testing.assert_array_equal(x, y)


def _init_arg_names(cls: type) -> list[str]:
    """The named arguments of `cls.__init__` (not self, *args, **kwargs)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.name != "self"]


def _registered(cls: type) -> bool:
    """Whether `cls` registers itself with `keras.saving.register_keras_serializable`."""
    return keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls


def run_model_test(
    cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Any,
    expected_output_shape: Any,
    expected_num_weights: int | None = None,
    expected_output_dtype: str = "float32",
) -> keras.Model:
    """One forward pass: output shape(s) and dtype, every weight built. Returns the model.

    `expected_output_shape` is a tuple, or (a model with several outputs) a dict
    or list of tuples shaped like the outputs.
    """
    model = build_model(cls, init_kwargs, input_data)
    result = model(as_tensor(input_data))
    if isinstance(result, tf.Tensor | np.ndarray):
        assert tuple(result.shape) == tuple(expected_output_shape), result.shape
    elif isinstance(result, dict):
        shapes = {key: tuple(t.shape) for key, t in result.items()}
        assert shapes == {k: tuple(v) for k, v in expected_output_shape.items()}, shapes
    else:
        shapes = [tuple(t.shape) for t in result]
        assert shapes == [tuple(v) for v in expected_output_shape], shapes
    for tensor in tf.nest.flatten(result):
        assert tensor.dtype == expected_output_dtype, tensor.dtype
    assert model.built and model.count_params() > 0
    if expected_num_weights is not None:
        assert len(model.weights) == expected_num_weights, len(model.weights)
    return model


def run_config_round_trip_test(
    cls: type[keras.Model], init_kwargs: dict[str, Any], input_data: Any
) -> keras.Model:
    """get_config -> (JSON) -> from_config: the same config and identical outputs.

    Every init argument is in the config (keras-hub's rule: all are stored and
    returned), with the value it was given. Returns the original model.
    """
    model = build_model(cls, init_kwargs, input_data)
    config = model.get_config()
    missing = [name for name in _init_arg_names(cls) if name not in config]
    assert not missing, f"{cls.__name__}.get_config() lacks init arguments {missing}"
    for key, value in init_kwargs.items():
        assert config[key] == value, (key, config[key], value)
    clone = cls.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    clone(as_tensor(input_data))
    clone.set_weights(model.get_weights())
    assert_outputs_equal(model, clone, input_data)
    return model


def run_serialization_test(
    cls: type[keras.Model], init_kwargs: dict[str, Any], input_data: Any
) -> None:
    """The config round trip, then keras (de)serialization through JSON when `cls`
    registers itself: the same class and config, identical outputs on the same weights."""
    model = run_config_round_trip_test(cls, init_kwargs, input_data)
    if not _registered(cls):
        return
    serialized = json.dumps(keras.saving.serialize_keras_object(model))
    restored = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert type(restored) is cls
    assert restored.get_config() == model.get_config()
    restored(as_tensor(input_data))
    restored.set_weights(model.get_weights())
    assert_outputs_equal(model, restored, input_data)


def run_precision_test(
    cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Any,
    policies: Sequence[str] = ("mixed_bfloat16", "mixed_float16"),
    tolerance: dict[str, float] | None = None,
    expected_output_dtype: str = "float32",
) -> dict[str, keras.Model]:
    """Under each mixed policy (set globally, as `config.runtime.precision` does):
    float32 variables, the policy's compute dtype, and outputs of
    `expected_output_dtype` (tfllm models return float32 logits) that are finite
    in training and inference and close to the float32 model's on the same weights
    (`PRECISION_TOLERANCE`, relative to the largest float32 output).

    Returns the mixed models by policy, for model-specific checks (e.g. a cache dtype).
    """
    tolerance = {**PRECISION_TOLERANCE, **(tolerance or {})}
    reference = build_model(cls, init_kwargs, input_data)
    expected = outputs(reference, input_data)
    models = {}
    for name in policies:
        with dtype_policy(name) as policy:
            model = build_model(cls, init_kwargs, input_data)
        assert model.compute_dtype == policy.compute_dtype, (name, model.compute_dtype)
        floats = [w for w in model.weights if keras.backend.is_float_dtype(w.dtype)]
        assert floats and {w.dtype for w in floats} == {policy.variable_dtype}, name
        model.set_weights(reference.get_weights())
        for training in (False, True):
            for tensor in tf.nest.flatten(model(as_tensor(input_data), training=training)):
                assert tensor.dtype == expected_output_dtype, (name, training, tensor.dtype)
                assert np.isfinite(tensor.numpy()).all(), (name, training)
        for got, want in zip(outputs(model, input_data), expected, strict=True):
            error = np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)
            assert error < tolerance[name], (name, error, tolerance[name])
        models[name] = model
    return models


def run_model_saving_test(
    cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Any,
    tmp_path: Any,
    keras_file: bool = True,
) -> None:
    """A `tf.train.Checkpoint` restores every variable into a fresh model (other seed):
    nothing missing, nothing extra, identical outputs. With `keras_file`, a `.keras`
    file loads back to the same outputs too."""
    model = build_model(cls, init_kwargs, input_data, seed=1)
    path = tf.train.Checkpoint(model=model).write(f"{tmp_path}/ckpt")
    other = build_model(cls, init_kwargs, input_data, seed=2)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(model.get_weights(), other.get_weights(), strict=True)
    ), "two seeds gave the same weights: the restore below would prove nothing"
    tf.train.Checkpoint(model=other).read(path).assert_existing_objects_matched()
    for a, b in zip(model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    saved = {name for name, _ in tf.train.list_variables(path) if name.startswith("model/")}
    assert len(saved) == len(model.weights), "a layer is not tracked by tf.train.Checkpoint"
    assert_outputs_equal(model, other, input_data)
    if keras_file:
        model.save(f"{tmp_path}/model.keras")
        loaded = keras.saving.load_model(f"{tmp_path}/model.keras")
        assert type(loaded) is cls
        for x, y in zip(outputs(model, input_data), outputs(loaded, input_data), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-6)


def run_remat_test(cls: type[keras.Model], init_kwargs: dict[str, Any], input_data: Any) -> None:
    from tfllm.models.remat import enable_remat

    plain = build_model(cls, init_kwargs, input_data)
    recomputed = build_model(cls, init_kwargs, input_data, seed=2)
    if not enable_remat(recomputed):
        # Nothing to recompute must mean no transformer blocks (CNN, MLP), never a
        # family that forgot its `remat_blocks` switch.
        assert not getattr(recomputed, "blocks", None), f"{cls.__name__} has blocks, no switch"
        return
    recomputed.set_weights(plain.get_weights())
    inputs = as_tensor(input_data)

    def loss_and_gradients(model: keras.Model) -> tuple[np.ndarray, list[np.ndarray]]:
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                # training=False: dropout off, so both models compute the same function.
                out = tf.nest.flatten(model(inputs, training=False))
                loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(t, tf.float32))) for t in out])
            return loss, tape.gradient(loss, model.trainable_variables)

        loss, grads = step()
        # Embedding gradients come as IndexedSlices: compare them dense. None: a weight the
        # output does not use (BERT's pooler), which must stay unused in both.
        dense = [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in grads]
        return np.asarray(loss), dense

    loss_a, grads_a = loss_and_gradients(plain)
    loss_b, grads_b = loss_and_gradients(recomputed)
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
    assert len(grads_a) == len(grads_b) == len(plain.trainable_variables)
    for a, b, v in zip(grads_a, grads_b, plain.trainable_variables, strict=True):
        if a is None or b is None:
            assert a is None and b is None, v.path
            continue
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=v.path)


def run_cache_test(
    cls: type[keras.Model],
    init_kwargs: dict[str, Any],
    input_data: Any,
    prefill: int = 1,
    call_kwargs: dict[str, Any] | None = None,
    expected_cache_shapes: list[tuple[int, ...]] | None = None,
    atol: float = 1e-4,
    model: keras.Model | None = None,
) -> None:
    """KV-cache decoding equals the full forward pass.

    `input_data` is int `[B, T]`: the first `prefill` positions go through
    `call_with_cache` at index 0 (the prompt), then one token at a time at a
    tensor index (decode steps); each step's logits must equal the full
    forward's at those positions, in its dtype, and the cache must keep its
    structure, shapes and dtypes (a decode loop carries it through
    `tf.while_loop`). `expected_cache_shapes` lists the flattened cache's shapes.
    """
    call_kwargs = call_kwargs or {}
    model = model or build_model(cls, init_kwargs, input_data)
    ids = tf.convert_to_tensor(input_data)
    batch, length = ids.shape
    full = model(ids).numpy()

    cache = model.init_cache(batch)
    layout = [(tuple(t.shape), t.dtype) for t in tf.nest.flatten(cache)]
    if expected_cache_shapes is not None:
        assert [shape for shape, _ in layout] == [tuple(s) for s in expected_cache_shapes]

    def check(logits: tf.Tensor, new_cache: Any, start: int, stop: int) -> None:
        assert logits.shape == full[:, start:stop].shape and logits.dtype == full.dtype
        np.testing.assert_allclose(logits.numpy(), full[:, start:stop], atol=atol)
        tf.nest.assert_same_structure(new_cache, cache)
        assert [(tuple(t.shape), t.dtype) for t in tf.nest.flatten(new_cache)] == layout

    logits, cache = model.call_with_cache(ids[:, :prefill], cache, 0, **call_kwargs)
    check(logits, cache, 0, prefill)
    for i in range(prefill, length):
        logits, cache = model.call_with_cache(
            ids[:, i : i + 1], cache, tf.constant(i), **call_kwargs
        )
        check(logits, cache, i, i + 1)


class ModelTests:
    """The harness as pytest tests: subclass as `class TestXxx(ModelTests)` and set

    - `model_class`, `init_kwargs` (tiny), `input_data` (a batch the model takes),
    - `expected_output_shape`, optionally `expected_num_weights`,
    - optionally `precision_tolerance` ({policy: tolerance}) or `policies`.

    Model-specific checks (a KV cache, padding rules) stay as tests of their own.
    """

    model_class: type[keras.Model]
    init_kwargs: dict[str, Any]
    input_data: Any
    expected_output_shape: tuple[int, ...]
    expected_num_weights: int | None = None
    policies: Sequence[str] = ("mixed_bfloat16", "mixed_float16")
    precision_tolerance: dict[str, float] | None = None

    def test_forward(self) -> None:
        run_model_test(
            self.model_class,
            self.init_kwargs,
            self.input_data,
            self.expected_output_shape,
            self.expected_num_weights,
        )

    def test_serialization(self) -> None:
        run_serialization_test(self.model_class, self.init_kwargs, self.input_data)

    def test_precision(self) -> None:
        run_precision_test(
            self.model_class,
            self.init_kwargs,
            self.input_data,
            self.policies,
            self.precision_tolerance,
        )

    def test_model_saving(self, tmp_path: Any) -> None:
        run_model_saving_test(self.model_class, self.init_kwargs, self.input_data, tmp_path)

    def test_remat(self) -> None:
        run_remat_test(self.model_class, self.init_kwargs, self.input_data)
