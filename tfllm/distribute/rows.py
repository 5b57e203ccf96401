"""Rows sharded over replicas, results back in row order, under any strategy.

`RowSharder` is the one mechanism `tfllm-generate --input_file` and
`tfllm-evaluate` share: a host batch of rows (prompts, eval windows, classifier inputs)
is padded to a multiple of the replica count by repeating its last row, each
replica takes a contiguous slice (replica r gets rows `r*k .. r*k+k-1`), runs
a per-row function, and the per-replica results are all-gathered in replica
order (`strategy.gather`), so row i of the result is row i of the input on
every worker. Padding rows are dropped after the gather.

- default / one_device: one replica, the function runs as is;
- mirrored: the per-replica batch is a slice of the global batch, one replica
  per GPU (or logical CPU);
- multi_worker: every worker reads the same rows (each process reads the
  input itself, as every worker of a training job reads its data) and
  computes only its replicas' slices; the all-gather is a collective, so every
  worker ends with all results and the chief writes them;
- tensor parallel (`MeshStrategy`): the rows are split along the mesh's
  `batch` axis, every matmul is split along its `model` axis (DTensor).

Why this and not `distribute_datasets_from_function`: that API hands whole
per-replica batches to replicas in turn and leaves a ragged last step, so
which rows a replica sees depends on the replica count; slicing each global
batch keeps "row i in, row i out" trivially true, which is what an output
file in input order and metrics equal to one device's need.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfllm.distribute.mesh import to_host
from tfllm.distribute.strategy import placement, replicas

Nest = object  # a numpy array or a tuple/dict of them, all with the same leading dim


def _pad_rows(rows: Nest, multiple: int) -> tuple[Nest, int]:
    """Repeat the last row until the row count divides by `multiple`; (padded, n)."""
    n = len(tf.nest.flatten(rows)[0])
    extra = -n % multiple
    if not extra:
        return rows, n
    return tf.nest.map_structure(
        lambda a: np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]), rows
    ), n


class RowSharder:
    """Runs `fn(rows) -> per-row results` over a host batch on every replica (module doc).

    `fn` is traced inside a `tf.function` (once per distinct input shape; pass
    batches of a fixed row count to avoid retracing) and must be per-row:
    row i of its output may depend only on row i of its input.
    """

    def __init__(self, strategy, fn: Callable[[Nest], Nest]) -> None:
        self.strategy = strategy
        self.fn = fn
        self.slices = replicas(strategy)
        placed = placement(strategy)
        # A mesh takes DTensor inputs: rows go through DTensor's SPMD program.
        self.mesh = placed if placed is not None and placed.sharded_inputs else None
        if self.mesh is not None:
            self._step = tf.function(fn, reduce_retracing=True)
        else:

            @tf.function(reduce_retracing=True)
            def step(values):
                out = strategy.run(fn, args=(values,))
                return tf.nest.map_structure(lambda v: strategy.gather(v, axis=0), out)

            self._step = step

    def __call__(self, rows: Nest) -> Nest:
        padded, n = _pad_rows(rows, self.slices)
        if self.mesh is not None:
            with self.mesh.scope():
                out = self._step(tf.nest.map_structure(self.mesh.to_mesh, padded))
            return tf.nest.map_structure(lambda v: to_host(v)[:n], out)
        per = len(tf.nest.flatten(padded)[0]) // self.slices

        def value_fn(ctx: tf.distribute.experimental.ValueContext) -> Nest:
            r = ctx.replica_id_in_sync_group
            return tf.nest.map_structure(lambda a: tf.constant(a[r * per : (r + 1) * per]), padded)

        values = self.strategy.experimental_distribute_values_from_function(value_fn)
        out = self._step(values)
        return tf.nest.map_structure(lambda v: v.numpy()[:n], out)
