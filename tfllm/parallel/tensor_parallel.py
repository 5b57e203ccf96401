"""Megatron-style tensor parallelism for the GPT and the transformer classifier
on a DTensor mesh.

The classifier's backbone has the GPT's layers under the GPT's names, so one
set of path rules (`MEGATRON_SPECS`) lays out both; its pooling and
classification head (`head`) stay replicated like the embeddings.

Inside every transformer block the Q/K/V projections and the first MLP matmul
are column-parallel (heads and FFN units split over the mesh's `model` axis),
the attention output projection and the second MLP matmul row-parallel; DTensor
then inserts one all-reduce after each row-parallel matmul in the forward pass
(and the matching ones in the backward pass). Everything else (embeddings,
LayerNorms, the tied head) is replicated.

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
from collections import deque
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from tfllm.parallel.mesh import (
    BATCH,
    MODEL,
    UNSHARDED,
    batch_sharded,
    create_mesh,
    replicated,
    to_host,
    to_layout,
)

# (path suffix, sharding spec) of every split variable; the rest are replicated.
# EinsumDense kernels: query/key/value [d, heads, head_dim], output [heads, head_dim, d].
MEGATRON_SPECS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("self_attention/query/kernel", (UNSHARDED, MODEL, UNSHARDED)),
    ("self_attention/key/kernel", (UNSHARDED, MODEL, UNSHARDED)),
    ("self_attention/value/kernel", (UNSHARDED, MODEL, UNSHARDED)),
    ("self_attention/query/bias", (MODEL, UNSHARDED)),
    ("self_attention/key/bias", (MODEL, UNSHARDED)),
    ("self_attention/value/bias", (MODEL, UNSHARDED)),
    ("self_attention/attention_output/kernel", (MODEL, UNSHARDED, UNSHARDED)),
    ("feedforward_intermediate_dense/kernel", (UNSHARDED, MODEL)),
    ("feedforward_intermediate_dense/bias", (MODEL,)),
    ("feedforward_output_dense/kernel", (MODEL, UNSHARDED)),
)


def sharding_spec(path: str, rank: int) -> tuple[str, ...]:
    """The Megatron sharding spec of the variable at `path` (replicated if not split)."""
    for suffix, spec in MEGATRON_SPECS:
        if path.endswith(suffix) and len(spec) == rank:
            return spec
    return (UNSHARDED,) * rank


class _LayoutCreator:
    """A `tf.variable_creator_scope` creator that makes every variable a DTensor.

    Model variables take the next planned (path, value) in creation order;
    optimizer slots the layout of the model variable they belong to; anything
    else (step counters, scalars) is replicated.
    """

    def __init__(self, mesh: dtensor.Mesh) -> None:
        self.mesh = mesh
        self.plan: deque[tuple[str, np.ndarray]] = deque()
        self.slot_layouts: dict[str, dtensor.Layout] = {}
        self.paused = False

    def __call__(self, next_creator: Callable, **kwargs) -> tf.Variable:
        if self.paused:
            return next_creator(**kwargs)
        value = kwargs["initial_value"]
        value = value() if callable(value) else value
        if self.plan:
            path, planned = self.plan.popleft()
            if tuple(planned.shape) != tuple(value.shape):
                raise RuntimeError(f"tensor parallel build: {path} changed shape between builds")
            layout = dtensor.Layout(list(sharding_spec(path, planned.ndim)), self.mesh)
            value = tf.constant(planned)
        else:
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


class MeshStrategy:
    """Runs the training loop on a `batch × model` DTensor mesh (see module doc)."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def __init__(self, tensor_parallel: int, devices: list[str] | None = None) -> None:
        self.tensor_parallel = tensor_parallel
        self.mesh = create_mesh(tensor_parallel, devices)
        self.data_parallel = self.mesh.dim_size("batch")
        self._creator = _LayoutCreator(self.mesh)
        self._depth = 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Ops run on the mesh; every variable created is a DTensor with its layout.

        Re-entrant: nested scopes add nothing (one creator must see each variable once).
        """
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            with dtensor.default_mesh(self.mesh), tf.variable_creator_scope(self._creator):
                yield
        finally:
            self._depth -= 1

    def build_model(self, build: Callable[[], keras.Model]) -> keras.Model:
        """`build()` twice: on the host (paths, values), then sharded on the mesh."""
        order: list[tf.Variable] = []

        def record(next_creator: Callable, **kwargs) -> tf.Variable:
            variable = next_creator(**kwargs)
            order.append(variable)
            return variable

        self._creator.paused = True
        try:
            with tf.variable_creator_scope(record):
                host_model = build()
        finally:
            self._creator.paused = False
        paths = {id(v.value): v.path for v in host_model.variables}
        self._creator.plan.extend((paths[id(v)], to_host(v)) for v in order if id(v) in paths)
        del host_model
        order.clear()
        with self.scope():
            model = build()
        if self._creator.plan:
            raise RuntimeError("tensor parallel build: the second build created fewer variables")
        # Keras names a slot `{variable path with / as _}_{slot}`; key by the built paths.
        self._creator.slot_layouts.update(
            {v.path.replace("/", "_"): dtensor.fetch_layout(v.value) for v in model.variables}
        )
        return model

    def run(self, fn: Callable, args: tuple = (), kwargs: dict | None = None):
        return fn(*args, **(kwargs or {}))

    def reduce(self, op: tf.distribute.ReduceOp, value, axis: int | None):
        """Values are already global under DTensor; only an `axis` needs reducing."""
        if axis is None:
            return value
        if op == tf.distribute.ReduceOp.SUM:
            return tf.reduce_sum(value, axis=axis)
        return tf.reduce_mean(value, axis=axis)

    def distribute_datasets_from_function(
        self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset], options=None
    ) -> dtensor.DTensorDataset:
        """The task's global batches, each split along the mesh's `batch` axis.

        The function sees one input pipeline and one replica, so it yields
        global batches in the order a one-device run sees them; DTensorDataset
        re-batches the unbatched rows in that order and shards each batch.
        """
        del options
        dataset = dataset_fn(tf.distribute.InputContext(1, 0, 1))
        spec = dataset.element_spec
        global_batch = tf.nest.flatten(spec)[0].shape[0]
        if global_batch is None or global_batch % self.data_parallel:
            raise ValueError(
                f"tensor parallel input: batches of {global_batch} rows cannot be split over "
                f"the mesh's {self.data_parallel} batch shards (static, divisible sizes needed)"
            )
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

    def replicate(self, value: tf.Tensor) -> tf.Tensor:
        """`value` whole on every device of the mesh (inside a traced function)."""
        return dtensor.relayout(value, replicated(self.mesh, value.shape.rank))

    def cache_update(self, cache: tf.Tensor, update: tf.Tensor, index) -> tf.Tensor:
        """`GPT.call_with_cache`'s cache write on the mesh: the one-hot blend, whose ops
        all have DTensor layout rules, relaid out to `[batch, model, ·, ·]` so the
        cache a decode loop carries keeps one layout from step to step."""
        from tfllm.models.gpt import write_cache

        layout = dtensor.Layout([BATCH, MODEL, UNSHARDED, UNSHARDED], self.mesh)
        return dtensor.relayout(write_cache(cache, update, index, "blend"), layout)

    def to_mesh(self, value: tf.Tensor | np.ndarray) -> tf.Tensor:
        """A host batch as a DTensor split along the `batch` axis (or replicated if it
        does not divide)."""
        value = tf.convert_to_tensor(value)
        rows = value.shape[0] if value.shape.rank else None
        if rows and rows % self.data_parallel == 0:
            return to_layout(value, batch_sharded(self.mesh, value.shape.rank))
        return to_layout(value, replicated(self.mesh, value.shape.rank))


def build_on(strategy, build: Callable[[], keras.Model]) -> keras.Model:
    """Builds the model for `strategy`: sharded on a mesh, placed per pipeline stage,
    else as `build()` does."""
    from tfllm.parallel.pipeline import PipelineStrategy

    if isinstance(strategy, (MeshStrategy, PipelineStrategy)):
        return strategy.build_model(build)
    return build()


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
