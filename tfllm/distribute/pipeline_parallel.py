"""GPipe pipeline parallelism: consecutive transformer blocks on K devices.

`config.runtime.pipeline_stages=K` splits the model into K stages of
consecutive transformer blocks, as evenly as possible (`np.array_split`: with
L % K != 0 the first stages take one block more). Which stage holds each
variable, and how a micro-batch runs stage by stage, is the model's to say
(`pipeline_stage`, `staged_per_example_loss`; the GPT's are in
`tfllm.models.staging`): for the GPT the token and position embeddings live
with the first stage, the final LayerNorm with the last. Every variable of a
stage, and every optimizer slot of such a variable, is created under
`tf.device(<stage device>)`: GPUs if the host has any, else the logical CPUs
of `config.runtime.logical_cpus`.

The tied head. The LM head is the token embedding used in reverse, and that
matrix lives with the first stage. Once per optimizer step the last stage
reads it (one copy of the `[vocab, d]` matrix from the first device to the
last) and every micro-batch's head uses that copy; its gradient comes back the
same way, once per step, summed over the micro-batches on the last device.
One copy per step instead of one per micro-batch, and no second weight that
would have to be kept equal to the first.

The schedule is GPipe (Huang et al. 2019). Inside the training step's
`tf.function` the batch is split into `num_microbatches=M` micro-batches;
each runs stage by stage, its activations copied from device to device, and
the per-example losses of all of them form the batch's loss. The backward
pass uses `tf.gradients`, which puts every gradient op on the device of the
forward op it differentiates (`tf.GradientTape` leaves gradient ops without a
device, so TensorFlow would run the whole backward pass on the first device;
measured). Each variable's gradient is the sum of its micro-batches'
contributions, which is the gradient of the whole batch's mean loss (every
micro-batch's per-example losses are scaled by the same global batch size),
and the trainer then clips and applies it in one optimizer step. Nothing
orders micro-batch i+1 after micro-batch i except the data, so TensorFlow's
dataflow executor is free to run stage k on micro-batch i while stage k+1
runs micro-batch i-1; what it does on this host is measured in
docs/distributed.md. The idle fraction of a GPipe step ("bubble") is
(K-1)/(M+K-1).

Checkpoints stay layout-free: variables keep their one-device paths and
shapes, and `tf.train.Checkpoint` writes values, not devices, so a K-stage
checkpoint restores on one device and the reverse.

`PipelineStrategy` has the part of the `tf.distribute.Strategy` interface the
training loop and the tasks use (scope, run, reduce,
distribute_datasets_from_function, num_replicas_in_sync), like
`tfllm.distribute.tensor_parallel.MeshStrategy`; the trainer asks it for the
staged per-example loss and the placed gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfllm.distribute.mesh import accelerator_devices
from tfllm.distribute.placement import PlacementStrategy, PlacingCreator, initial_shape
from tfllm.errors import ConfigError


def bubble_fraction(stages: int, num_microbatches: int) -> float:
    """GPipe's idle share of a step: (K-1)/(M+K-1) (each device waits K-1 slots)."""
    return (stages - 1) / (num_microbatches + stages - 1)


def block_stages(num_layers: int, stages: int) -> list[int]:
    """The stage of each transformer block: consecutive runs, as even as possible."""
    if not 1 <= stages <= num_layers:
        raise ConfigError(
            f"config.runtime.pipeline_stages: {stages} stages need at least {stages} "
            f"transformer blocks, the model has {num_layers}"
        )
    owner: list[int] = []
    for stage, part in enumerate(np.array_split(np.arange(num_layers), stages)):
        owner.extend([stage] * len(part))
    return owner


class _StageCreator(PlacingCreator):
    """Puts each variable on its stage: model variables take the next planned
    (path, value, device) in creation order; optimizer slots go to their
    variable's device; anything else (step counter, learning rate) where
    TensorFlow puts it."""

    def __init__(self) -> None:
        super().__init__()
        self.slot_devices: dict[str, str] = {}

    def create_planned(self, entry, next_creator: Callable, kwargs: dict) -> tf.Variable:
        path, value, device = entry
        if initial_shape(kwargs) != value.shape:
            raise RuntimeError(f"pipeline parallel build: {path} changed shape between builds")
        kwargs["initial_value"] = value
        with tf.device(device):  # tf.device(None) keeps the surrounding placement
            return next_creator(**kwargs)

    def create_other(self, next_creator: Callable, kwargs: dict) -> tf.Variable:
        name = kwargs.get("name") or ""
        owners = [prefix for prefix in self.slot_devices if name.startswith(prefix + "_")]
        if owners:
            with tf.device(self.slot_devices[max(owners, key=len)]):
                return next_creator(**kwargs)
        return next_creator(**kwargs)


class PipelineStrategy(PlacementStrategy):
    """Runs the training loop with the GPT split into stages (see module doc)."""

    kind = "pipeline parallel"

    def __init__(
        self, stages: int, num_microbatches: int, devices: Sequence[str] | None = None
    ) -> None:
        device_type, available = accelerator_devices()
        available = list(available if devices is None else devices)
        if len(available) < stages:
            raise ConfigError(
                f"config.runtime.pipeline_stages: {stages} stages need {stages} devices, this "
                f"host has {len(available)} {device_type} device(s) (on a CPU host set "
                f"config.runtime.logical_cpus={stages})"
            )
        self.stages = stages
        self.num_microbatches = num_microbatches
        self.devices = available[:stages]
        self.block_stage: list[int] = []
        super().__init__(_StageCreator())

    def _plan(self, host_model, recorded):
        if not hasattr(host_model, "pipeline_stage"):
            raise ConfigError(
                f"config.runtime.pipeline_stages: a {type(host_model).__name__} cannot be split "
                "into pipeline stages (it has no pipeline_stage / staged_per_example_loss)"
            )
        self.block_stage = block_stages(int(host_model.num_layers), self.stages)
        self._stage_of = host_model.pipeline_stage
        plan = []
        for path, variable in recorded:
            stage = self._stage_of(path, self.block_stage)
            if stage is None and variable.trainable:
                raise RuntimeError(f"pipeline parallel: no stage for weight {path!r}")
            # Dropout's RNG states (2 integers each, no layer in their path)
            # stay where TensorFlow puts them.
            device = None if stage is None else self.devices[stage]
            plan.append((path, variable.numpy(), device))
        return plan

    def _after_build(self, model: keras.Model) -> None:
        self._creator.slot_devices.update(
            {v.path.replace("/", "_"): v.value.device for v in model.variables}
        )

    def stage_device(self, path: str) -> str | None:
        """The device a model variable at `path` belongs on (None: no stage)."""
        stage = self._stage_of(path, self.block_stage)
        return None if stage is None else self.devices[stage]

    def parameters_per_device(self, model: keras.Model) -> dict[str, int]:
        """Parameters each stage device holds (`CPU:1` → count), read from the
        variables' actual placement (RNG states, which are no parameters, left out)."""
        counts = {_short(device): 0 for device in self.devices}
        for variable in model.weights:
            if self._stage_of(variable.path, self.block_stage) is not None:
                counts[_short(variable.value.device)] += int(np.prod(variable.shape))
        return counts

    # ------------------------------------------------------------ the step
    def per_example_loss(
        self, task, model: keras.Model, inputs: tf.Tensor, targets: tf.Tensor, training: bool
    ) -> tf.Tensor:
        """The task's per-example loss of the batch, run by the model stage by stage
        over `num_microbatches` micro-batches (`model.staged_per_example_loss`)."""
        return model.staged_per_example_loss(
            task,
            inputs,
            targets,
            devices=self.devices,
            block_stage=self.block_stage,
            num_microbatches=self.num_microbatches,
            training=training,
        )

    def gradients(self, loss: tf.Tensor, variables: Sequence) -> list:
        """d loss / d variables with every gradient op on its forward op's device.

        `tf.gradients` colocates each gradient with the op it differentiates,
        so stage k's backward runs on stage k's device; the tape would leave
        the gradient ops unplaced. Graph mode only (the train step is a
        tf.function).
        """
        return tf.gradients(loss, [getattr(v, "value", v) for v in variables])

    def describe(self) -> str:
        """One line: stages, their blocks and devices, micro-batches, bubble."""
        spans = []
        for stage, device in enumerate(self.devices):
            blocks = [i for i, s in enumerate(self.block_stage) if s == stage]
            spans.append(f"{_short(device)}: blocks {blocks[0]}-{blocks[-1]}")
        bubble = bubble_fraction(self.stages, self.num_microbatches)
        return (
            f"pipeline {self.stages} stages ({'; '.join(spans)}), "
            f"{self.num_microbatches} micro-batches, bubble {bubble:.0%}"
        )


def _short(device: str) -> str:
    """`CPU:1` from a full device name such as `/job:localhost/.../device:CPU:1`."""
    spec = tf.DeviceSpec.from_string(device)
    return f"{spec.device_type}:{spec.device_index}"
