"""The DTensor mesh tfllm's model parallelism runs on, and moving values onto it.

A mesh has two axes: `batch` (data parallel: the global batch is split along
it) and `model` (tensor parallel: kernels are split along it). With 4 logical
CPUs and `tensor_parallel=2` the mesh is `batch=2 × model=2`; with 2 logical
CPUs it is `batch=1 × model=2`. DTensor (`tf.experimental.dtensor`) then runs
every op SPMD over the mesh and inserts the collectives the layouts imply
(DESIGN §2: model parallelism rides on DTensor).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from tfllm.errors import ConfigError

BATCH = "batch"
MODEL = "model"
UNSHARDED = dtensor.UNSHARDED


def accelerator_devices() -> tuple[str, list[str]]:
    """(device type, local device names) the mesh spans: GPUs if any, else logical CPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return "GPU", [d.name for d in gpus]
    return "CPU", [d.name for d in tf.config.list_logical_devices("CPU")]


def create_mesh(tensor_parallel: int, devices: list[str] | None = None) -> dtensor.Mesh:
    """A `batch × model` mesh, `model` of size `tensor_parallel`, over `devices`
    (default: every local accelerator, else every logical CPU)."""
    device_type, all_devices = accelerator_devices()
    devices = all_devices if devices is None else devices
    if len(devices) % tensor_parallel:
        raise ConfigError(
            f"config.runtime.tensor_parallel: {tensor_parallel} does not divide the "
            f"{len(devices)} {device_type} device(s) of this host (set "
            "config.runtime.logical_cpus to a multiple of it on a CPU host)"
        )
    batch = len(devices) // tensor_parallel
    return dtensor.create_mesh(
        [(BATCH, batch), (MODEL, tensor_parallel)], devices=devices, device_type=device_type
    )


def replicated(mesh: dtensor.Mesh, rank: int) -> dtensor.Layout:
    return dtensor.Layout.replicated(mesh, rank=rank)


def batch_sharded(mesh: dtensor.Mesh, rank: int) -> dtensor.Layout:
    """Axis 0 split over the mesh's `batch` axis, the rest whole."""
    return dtensor.Layout.batch_sharded(mesh, BATCH, rank=rank)


def to_layout(value: tf.Tensor | np.ndarray, layout: dtensor.Layout) -> tf.Tensor:
    """`value` (a host tensor or a DTensor) as a DTensor with `layout`.

    Host values are copied to the mesh replicated first: DTensor refuses to
    relayout or assign a tensor that is not already on the mesh.
    """
    if isinstance(value, tf.Tensor) and dtensor.is_dtensor(value):
        return dtensor.relayout(value, layout)
    value = tf.convert_to_tensor(value)
    on_mesh_value = dtensor.copy_to_mesh(value, replicated(layout.mesh, value.shape.rank))
    return dtensor.relayout(on_mesh_value, layout)


def to_host(value) -> np.ndarray:
    """The whole value of a (possibly sharded) DTensor or variable, as numpy.

    A sharded DTensor cannot be copied off the mesh ("Trying to copy a
    non-single-device and non-replicated DTensor is not supported"), so it is
    relaid out replicated (an all-gather) first.
    """
    tensor = _read(value)
    if isinstance(tensor, tf.Tensor) and dtensor.is_dtensor(tensor):
        layout = dtensor.fetch_layout(tensor)
        if not layout.is_fully_replicated():
            tensor = dtensor.relayout(tensor, replicated(layout.mesh, tensor.shape.rank))
    return np.asarray(tensor)


def assign(variable, value) -> None:
    """`variable.assign(value)`, for a host variable or one on a mesh.

    A mesh variable refuses a host value ("AssignVariableOp got a regular
    tensor ... but was expecting a DTensor"), so the value is first laid out
    as the variable is (`to_layout`): copying an LM's weights into a
    tensor-parallel classifier (`train.init_from`) goes through here.
    """
    current = _read(variable)
    if isinstance(current, tf.Tensor) and dtensor.is_dtensor(current):
        value = to_layout(_read(value), dtensor.fetch_layout(current))
    variable.assign(value)


def on_mesh(model: keras.Model) -> bool:
    """True when the model's variables live on a DTensor mesh (tensor parallel)."""
    variables = model.variables
    return bool(variables) and dtensor.is_dtensor(_read(variables[0]))


def local_shapes(variable) -> list[tuple[str, tuple[int, ...]]]:
    """(device, shape) of each device's piece of a variable: what it holds in memory."""
    return [(piece.device, tuple(piece.shape)) for piece in dtensor.unpack(_read(variable))]


def _read(value) -> tf.Tensor:
    """The tensor behind a Keras variable, a tf.Variable or a tensor."""
    if isinstance(value, keras.Variable):
        value = value.value
    if isinstance(value, tf.Variable):
        value = value.read_value()
    return value
