"""Megatron-style tensor parallelism on a DTensor mesh.

Which kernels are split, and along which axis, is the model's to say: it
lists rules (variable path suffix, rank, split axis) as
`tensor_parallel_splits` (the GPT and the transformer classifier share
`tfllm.models.staging.MEGATRON_SPLITS`: column-parallel Q/K/V and first MLP
matmul, row-parallel attention output and second MLP matmul). Every axis a
rule names is split over the mesh's `model` axis, everything else is
replicated; DTensor then inserts the all-reduce after each row-parallel
matmul in the forward pass (and the matching ones in the backward pass).

Keras kernels cannot be resharded after they exist (assigning a DTensor into
one fails: "FetchLayout expects a tensor placed on the layout device"), so the
layouts are given at creation: `MeshStrategy.build_model` builds the model once
on the host to learn its variables' paths and initial values in creation
order, then builds it again under the mesh with a variable creator that hands
each variable its value already relaid out to its layout. The sharded model so
starts from exactly the weights a one-device run of the same seed starts from.
Optimizer slots (AdamW's moments) take their variable's layout through the
same creator, matched by Keras' slot name `{variable path}_{slot}`; Keras
would otherwise make them replicated, wasting the memory the split saves.

`MeshStrategy` has the part of the `tf.distribute.Strategy` interface the
training loop and the tasks use (scope, run, reduce,
distribute_datasets_from_function, num_replicas_in_sync), so the loop runs
unchanged: to it the whole mesh is one replica, and data parallelism over the
mesh's `batch` axis happens inside DTensor's SPMD program.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from tfllm.distribute.mesh import (
    BATCH,
    MODEL,
    UNSHARDED,
    batch_sharded,
    create_mesh,
    replicated,
    to_host,
    to_layout,
)
from tfllm.distribute.placement import PlacementStrategy, PlacingCreator, initial_shape
from tfllm.errors import ConfigError


def sharding_spec(
    path: str, rank: int, splits: Sequence[tuple[str, int, int]] = ()
) -> tuple[str, ...]:
    """The sharding spec of the variable at `path`: the axis a `splits` rule
    (path suffix, rank, axis) names is split over the mesh's `model` axis, every
    other axis (and every variable no rule names) is replicated."""
    for suffix, split_rank, axis in splits:
        if path.endswith(suffix) and rank == split_rank:
            spec = [UNSHARDED] * rank
            spec[axis] = MODEL
            return tuple(spec)
    return (UNSHARDED,) * rank


class _LayoutCreator(PlacingCreator):
    """Makes every variable a DTensor: model variables take the next planned
    (path, value) in creation order and their Megatron layout; optimizer slots
    the layout of the model variable they belong to; anything else (step
    counters, scalars) is replicated."""

    def __init__(self, mesh: dtensor.Mesh) -> None:
        super().__init__()
        self.mesh = mesh
        self.slot_layouts: dict[str, dtensor.Layout] = {}

    def create_planned(self, entry, next_creator: Callable, kwargs: dict) -> tf.Variable:
        path, planned, spec = entry
        if tuple(planned.shape) != initial_shape(kwargs):
            raise RuntimeError(f"tensor parallel build: {path} changed shape between builds")
        layout = dtensor.Layout(list(spec), self.mesh)
        kwargs["initial_value"] = to_layout(tf.constant(planned), layout)
        return next_creator(**kwargs)

    def create_other(self, next_creator: Callable, kwargs: dict) -> tf.Variable:
        value = kwargs["initial_value"]
        value = value() if callable(value) else value
        layout = self._slot_layout(kwargs.get("name") or "", tf.TensorShape(value.shape))
        kwargs["initial_value"] = to_layout(value, layout)
        return next_creator(**kwargs)

    def _slot_layout(self, name: str, shape: tf.TensorShape) -> dtensor.Layout:
        owners = [prefix for prefix in self.slot_layouts if name.startswith(prefix + "_")]
        if owners:
            layout = self.slot_layouts[max(owners, key=len)]
            if layout.rank == shape.rank:
                return layout
        return replicated(self.mesh, shape.rank)


class MeshStrategy(PlacementStrategy):
    """Runs the training loop on a `batch × model` DTensor mesh (see module doc)."""

    sharded_inputs = True
    kind = "tensor parallel"

    def __init__(self, tensor_parallel: int, devices: list[str] | None = None) -> None:
        self.tensor_parallel = tensor_parallel
        self.mesh = create_mesh(tensor_parallel, devices)
        self.data_parallel = self.mesh.dim_size("batch")
        super().__init__(_LayoutCreator(self.mesh))

    def _placement_context(self) -> contextlib.AbstractContextManager:
        """Ops run on the mesh."""
        return dtensor.default_mesh(self.mesh)

    def _plan(self, host_model, recorded):
        """Each variable's host value and spec, from the model's own split rules
        (`tensor_parallel_splits`, e.g. `tfllm.models.staging.MEGATRON_SPLITS`)."""
        splits = getattr(host_model, "tensor_parallel_splits", None)
        if splits is None:
            raise ConfigError(
                f"config.runtime.tensor_parallel: a {type(host_model).__name__} has no "
                "tensor_parallel_splits (which kernels to split over the mesh)"
            )
        plan = []
        for path, variable in recorded:
            value = to_host(variable)
            plan.append((path, value, sharding_spec(path, value.ndim, splits)))
        return plan

    def _after_build(self, model: keras.Model) -> None:
        # Keras names a slot `{variable path with / as _}_{slot}`; key by the built paths.
        self._creator.slot_layouts.update(
            {v.path.replace("/", "_"): dtensor.fetch_layout(v.value) for v in model.variables}
        )

    def replicas(self) -> int:
        """The mesh's `batch` axis: rows are split along it."""
        return self.data_parallel

    def describe(self) -> str:
        return (
            f"tensor parallel {self.tensor_parallel} "
            f"(mesh {self.data_parallel} × {self.tensor_parallel})"
        )

    def distribute_datasets_from_function(
        self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset], options=None
    ) -> dtensor.DTensorDataset:
        """The task's global batches, each split along the mesh's `batch` axis.

        The function sees one input pipeline and one replica, so it yields
        global batches in the order a one-device run sees them; DTensorDataset
        re-batches the unbatched rows in that order and shards each batch.
        """
        del options
        dataset, global_batch = self._source(dataset_fn)
        spec = dataset.element_spec
        layouts = tf.nest.map_structure(lambda s: batch_sharded(self.mesh, s.shape.rank), spec)
        # DTensorDataset gives batch shard i every r-th per-shard batch through
        # tf.data auto-sharding, which tfllm's input functions switch OFF (they
        # shard themselves); with it off every shard would read the same rows.
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        return dtensor.DTensorDataset(
            dataset.unbatch().with_options(options),
            mesh=self.mesh,
            layouts=layouts,
            global_batch_size=global_batch,
            dataset_already_batched=False,
            batch_dim="batch",
        )

    def finite_batches(
        self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset]
    ) -> Iterator:
        """One pass over a finite input's sharded batches that never asks the DTensor
        iterator for more than it has.

        Why: in TF 2.21, once a `DTensorDataset` iterator reaches its end the mesh
        is unusable; the next op on it fails ("Unable to copy tensor value for
        broadcast", or a variable read "cancelled before it was started"). A
        plain iterator over the same source batches counts the rows, so the
        sharded iterator is pulled only while a full global batch is left.
        """
        sharded = iter(self.distribute_datasets_from_function(dataset_fn))
        source, global_batch = self._source(dataset_fn)
        rows = served = 0
        for element in source:
            rows += int(tf.shape(tf.nest.flatten(element)[0])[0])
            while rows >= (served + 1) * global_batch:
                served += 1
                yield next(sharded)

    def _source(self, dataset_fn) -> tuple[tf.data.Dataset, int]:
        """The one input pipeline the mesh reads, and its static global batch size."""
        dataset = dataset_fn(tf.distribute.InputContext(1, 0, 1))
        global_batch = tf.nest.flatten(dataset.element_spec)[0].shape[0]
        if global_batch is None or global_batch % self.data_parallel:
            raise ValueError(
                f"tensor parallel input: batches of {global_batch} rows cannot be split over "
                f"the mesh's {self.data_parallel} batch shards (static, divisible sizes needed)"
            )
        return dataset, global_batch

    def replicate(self, value: tf.Tensor) -> tf.Tensor:
        """`value` whole on every device of the mesh (inside a traced function)."""
        return dtensor.relayout(value, replicated(self.mesh, value.shape.rank))

    def cache_writer(self, blend_write: Callable) -> Callable:
        """The decode loop's cache write on the mesh.

        `blend_write(cache, update, index)` is the model's one-hot-blend write,
        whose ops all have DTensor layout rules; its result is relaid out to
        `[batch, model, ·, ·]` so the cache a decode loop carries keeps one
        layout from step to step. The model passes its own write in: this
        module knows layouts, not the model's cache format.
        """
        layout = dtensor.Layout([BATCH, MODEL, UNSHARDED, UNSHARDED], self.mesh)

        def write(cache: tf.Tensor, update: tf.Tensor, index) -> tf.Tensor:
            return dtensor.relayout(blend_write(cache, update, index), layout)

        return write

    def to_mesh(self, value: tf.Tensor | np.ndarray) -> tf.Tensor:
        """A host batch as a DTensor split along the `batch` axis (or replicated if it
        does not divide)."""
        value = tf.convert_to_tensor(value)
        rows = value.shape[0] if value.shape.rank else None
        if rows and rows % self.data_parallel == 0:
            return to_layout(value, batch_sharded(self.mesh, value.shape.rank))
        return to_layout(value, replicated(self.mesh, value.shape.rank))


def copy_to_host_model(source: keras.Model, target: keras.Model) -> keras.Model:
    """Assigns `source`'s (possibly sharded) weights to the same-shaped host `target`."""
    for src, dst in zip(source.variables, target.variables, strict=True):
        dst.assign(to_host(src))
    return target


class HostCopy:
    """A one-device twin of a sharded model, refreshed on demand.

    Text samples during training go through the eager, cached generation loop,
    which takes host tensors; under tensor parallelism they read this twin
    (an all-gather of the weights per refresh, so it suits samples at eval
    time, not every step).
    """

    def __init__(self, build: Callable[[], keras.Model]) -> None:
        self._build = build
        self._model: keras.Model | None = None

    def of(self, source: keras.Model) -> keras.Model:
        if self._model is None:
            self._model = self._build()
        return copy_to_host_model(source, self._model)
