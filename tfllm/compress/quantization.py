"""Quantization-aware training (QAT) for Keras 3 Dense / EinsumDense layers.

tfmot's `quantize_model` rejects Keras 3 models and its quantizer objects
cannot build on a Keras 3 layer: `Quantizer.build(shape, name, layer)` calls
`layer.add_weight(name + "_min", ...)` with the name positional, which Keras 3
refuses (DESIGN §2). What is reused and what is not:

* weights: tfmot's own `LastValueQuantizer` (8 bits, per output channel,
  symmetric, narrow range: the int8 weight scheme the TFLite converter uses),
  built through `_RangeVariableFactory`, a small adapter that takes tfmot's
  positional `add_weight` call and creates the range variables itself;
* activations (each quantized layer's input and output): our
  `ActivationQuantizer`, because tfmot's `MovingAverageQuantizer` starts its
  range at ±6 with an EMA decay of 0.999, which a fine-tune of a few hundred
  steps never moves to the data's range. Ours starts from the first batch's
  range. Both emit TF core's `FakeQuantWithMinMaxVars*` ops (straight-through
  gradients), the ops tfmot's QAT is built on.

Fake quantization is attached to a built model by replacing each target
layer's `call` on the instance (`attach_fake_quant`); the Keras layers, their
variables and the checkpoint layout stay exactly as in the float model, so the
QAT workdir exports, evaluates and serves like any other. The int8 `.tflite`
is then made by the converter's full-integer path (`tfllm-export
--quantize=int8`): its per-channel weight scales are computed with the same
formula as the fake-quant, so QAT-trained weights land on the grid they were
trained on, and its activation ranges are calibrated on the same training text.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tfllm.compress.kernels import Kernel, find_kernels
from tfllm.errors import ConfigError
from tfllm.training.plugins import TrainingPlugin

QAT_KINDS = ("dense", "einsum_dense")
NUM_BITS = 8


def _range_variable(value: float, shape, name: str) -> tf.Variable:
    # MEAN aggregation: replicas see the same batch statistics after all-reduce,
    # and an assignment from the replica context must say how to combine.
    return tf.Variable(
        tf.fill(shape, tf.constant(value, tf.float32)),
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_WRITE,
        aggregation=tf.VariableAggregation.MEAN,
    )


class _RangeVariableFactory:
    """Stands in for the `layer` argument of a tfmot `Quantizer.build`.

    tfmot calls `layer.add_weight(name, initializer=..., trainable=False,
    shape=...)`; this creates the variable (tfmot's initial range ±6) and keeps
    it so the QAT state can checkpoint it.
    """

    def __init__(self, prefix: str, created: list[tf.Variable]) -> None:
        self.prefix = prefix
        self.created = created

    def add_weight(self, name, initializer=None, trainable=False, shape=None, **kwargs):
        del initializer, trainable, kwargs  # tf_keras initializers; values set below
        shape = [] if shape is None else ([shape] if isinstance(shape, int) else list(shape))
        initial = -6.0 if name.endswith("_min") else 6.0
        variable = _range_variable(initial, shape, f"{self.prefix}_{name}")
        self.created.append(variable)
        return variable


class ActivationQuantizer:
    """Per-tensor asymmetric 8-bit fake quant with an EMA range seeded by the first batch."""

    def __init__(self, name: str, created: list[tf.Variable], decay: float = 0.99) -> None:
        self.decay = decay
        self.min = _range_variable(0.0, [], f"{name}_min")
        self.max = _range_variable(0.0, [], f"{name}_max")
        self.seen = tf.Variable(
            False,
            trainable=False,
            name=f"{name}_seen",
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        created.extend([self.min, self.max, self.seen])

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if training:
            batch_min = tf.minimum(tf.reduce_min(x), 0.0)  # the range must hold 0 exactly
            batch_max = tf.maximum(tf.reduce_max(x), 0.0)
            keep = tf.where(self.seen, self.decay, 0.0)
            self.min.assign(keep * self.min + (1.0 - keep) * batch_min)
            self.max.assign(keep * self.max + (1.0 - keep) * batch_max)
            self.seen.assign(True)
        return tf.quantization.fake_quant_with_min_max_vars(
            x, self.min, self.max, num_bits=NUM_BITS, narrow_range=False
        )


class _FakeQuantizedCall:
    """The replacement `call` of one Dense / EinsumDense layer.

    Keras' own `call` bodies for these layers are three lines (matmul or einsum,
    bias, activation); this repeats them with fake-quantized input, kernel and
    output, because the kernel is read inside `call` and cannot be swapped.
    """

    def __init__(self, kernel: Kernel, created: list[tf.Variable]) -> None:
        self.kernel = kernel
        label = kernel.name.replace("/", "_").removesuffix("_kernel")
        self.input_quantizer = ActivationQuantizer(f"{label}_input", created)
        self.output_quantizer = ActivationQuantizer(f"{label}_output", created)
        self.weight_quantizer = tfmot.quantization.keras.quantizers.LastValueQuantizer(
            num_bits=NUM_BITS, per_axis=True, symmetric=True, narrow_range=True
        )
        _, inputs = kernel.matrix_shape
        self.matrix = [inputs, -1]  # [in, out]: per-channel along the last axis
        self.weight_ranges = self.weight_quantizer.build(
            tf.TensorShape([inputs, kernel.matrix_shape[0]]),
            "kernel",
            _RangeVariableFactory(label, created),
        )

    def fake_quant_kernel(self, training: bool) -> tf.Tensor:
        value = tf.convert_to_tensor(self.kernel.variable)
        matrix = tf.reshape(value, self.matrix)
        quantized = self.weight_quantizer(matrix, training, self.weight_ranges)
        return tf.reshape(quantized, self.kernel.shape)

    def __call__(self, layer, inputs, training=None):
        training = bool(training)
        x = self.input_quantizer(inputs, training)
        kernel = self.fake_quant_kernel(training)
        if self.kernel.kind == "einsum_dense":
            y = keras.ops.einsum(layer.equation, x, kernel)
        else:
            y = keras.ops.matmul(x, kernel)
        if layer.bias is not None:
            y = keras.ops.add(y, layer.bias)
        if layer.activation is not None:
            y = layer.activation(y)
        return self.output_quantizer(y, training)


class _QATState(tf.Module):
    def __init__(self, variables: list[tf.Variable]) -> None:
        super().__init__(name="qat")
        self.ranges = variables


def attach_fake_quant(model: keras.Model) -> tuple[list[Kernel], list[tf.Variable]]:
    """Makes every Dense / EinsumDense of a built model compute with fake quantization.

    Returns the quantized kernels and the range variables (to checkpoint).
    """
    if keras.mixed_precision.global_policy().name != "float32":
        raise ConfigError(
            "--method=qat: config.runtime.precision must be float32 (fake quantization "
            "simulates int8 on float32 values)"
        )
    kernels = find_kernels(model, QAT_KINDS)
    created: list[tf.Variable] = []
    for kernel in kernels:
        fake = _FakeQuantizedCall(kernel, created)
        # Bound to this instance only: Keras' `__call__` looks `call` up on the
        # instance, so other models of the same classes are untouched.
        object.__setattr__(kernel.layer, "call", types.MethodType(fake.__call__, kernel.layer))
    return kernels, created


class QATPlugin(TrainingPlugin):
    """Trains through fake quantization of every Dense / EinsumDense layer."""

    name = "qat"

    def __init__(self) -> None:
        self.kernels: list[Kernel] = []
        self._state: _QATState | None = None

    def setup(self, model, optimizer):
        del optimizer
        self.kernels, ranges = attach_fake_quant(model)
        self._state = _QATState(ranges)

    def trackable(self):
        return self._state

    def initialize(self, model):
        del model
        return (
            f"Quantization-aware training: {len(self.kernels)} Dense/EinsumDense layers "
            "(attention projections included) fake-quantized to int8 (weights per channel, "
            "activations per tensor); eval metrics below are the simulated int8 ones"
        )
