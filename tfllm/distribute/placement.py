"""The base of strategies that place one model's variables themselves.

`MeshStrategy` (tensor parallel: every kernel a DTensor with its layout) and
`PipelineStrategy` (GPipe: every variable on its stage's device) differ only
in *where* a variable goes. Both learn that the same way, which is why this
base exists: build the model once on the host to learn each variable's path
and initial value in creation order, then build it again inside `scope()`,
where a `tf.variable_creator_scope` creator hands each variable its planned
value, placed. The placed model so starts from exactly the weights a
one-device run with the same seed starts from, and optimizer slots (Keras
names them `{variable path with / as _}_{slot}`) follow their variable.

To the training loop and the tasks a placing strategy is one replica with the
part of the `tf.distribute.Strategy` interface they use (scope, run, reduce,
distribute_datasets_from_function, num_replicas_in_sync). What callers used
to learn with `isinstance` is asked here instead: `replicas()`,
`describe()`, `sharded_inputs`, `per_example_loss` / `gradients` (a staged
step), `parameters_per_device`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import keras
import tensorflow as tf


class PlacingCreator:
    """A `tf.variable_creator_scope` creator whose placement the subclass decides.

    `plan` holds one entry per model variable in creation order (filled by
    `PlacementStrategy.build_model`); `paused` lets the host build through
    untouched.
    """

    def __init__(self) -> None:
        self.plan: deque = deque()
        self.paused = False

    def __call__(self, next_creator: Callable, **kwargs) -> tf.Variable:
        if self.paused:
            return next_creator(**kwargs)
        if self.plan:
            return self.create_planned(self.plan.popleft(), next_creator, kwargs)
        return self.create_other(next_creator, kwargs)

    def create_planned(self, entry, next_creator: Callable, kwargs: dict) -> tf.Variable:
        raise NotImplementedError

    def create_other(self, next_creator: Callable, kwargs: dict) -> tf.Variable:
        """Optimizer slots, step counters, RNG states: no planned value."""
        return next_creator(**kwargs)


def initial_shape(kwargs: dict) -> tuple[int, ...]:
    """The shape of a variable being created, from its (possibly callable) initial value."""
    value = kwargs["initial_value"]
    return tuple((value() if callable(value) else value).shape)


class PlacementStrategy:
    """One replica whose model variables this strategy places (see module doc)."""

    num_replicas_in_sync = 1
    cluster_resolver = None
    # True when the model takes its inputs as DTensors on a mesh, so per-row
    # inference (evaluation, generation) must go through `RowSharder`.
    sharded_inputs = False
    kind = "placement"  # used in error messages: "tensor parallel build: ..."

    def __init__(self, creator: PlacingCreator) -> None:
        self._creator = creator
        self._depth = 0

    # -------------------------------------------------------------- building
    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Every variable created inside is placed (re-entrant: nested scopes add
        nothing, since one creator must see each variable once)."""
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            with self._placement_context(), tf.variable_creator_scope(self._creator):
                yield
        finally:
            self._depth -= 1

    def _placement_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def build_model(self, build: Callable[[], keras.Model]) -> keras.Model:
        """`build()` twice: on the host (paths, initial values), then placed."""
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
        recorded = [(paths[id(v)], v) for v in order if id(v) in paths]
        self._creator.plan.extend(self._plan(host_model, recorded))
        del host_model
        order.clear()
        with self.scope():
            model = build()
        if self._creator.plan:
            raise RuntimeError(f"{self.kind} build: the second build created fewer variables")
        self._after_build(model)
        return model

    def _plan(self, host_model: keras.Model, recorded: Sequence[tuple[str, tf.Variable]]) -> list:
        """One creator plan entry per (path, host variable), in creation order."""
        raise NotImplementedError

    def _after_build(self, model: keras.Model) -> None:
        """Learns where the optimizer slots of the placed model's variables go."""

    # ------------------------------------------------------------- questions
    def replicas(self) -> int:
        """How many slices a global batch of rows is cut into."""
        return 1

    def describe(self) -> str:
        raise NotImplementedError

    def parameters_per_device(self, model: keras.Model) -> dict[str, int] | None:
        """Parameters each device holds, where that is the point of the strategy."""
        del model
        return None

    def per_example_loss(self, task, model, inputs, targets, training: bool) -> tf.Tensor | None:
        """The step's loss computed the strategy's way; None: the task's own."""
        del task, model, inputs, targets, training
        return None

    def gradients(self, loss: tf.Tensor, variables: Sequence) -> list | None:
        """The step's gradients computed the strategy's way; None: the tape's."""
        del loss, variables
        return None

    # ----------------------------------------- the tf.distribute surface
    def run(self, fn: Callable, args: tuple = (), kwargs: dict | None = None):
        return fn(*args, **(kwargs or {}))

    def reduce(self, op: tf.distribute.ReduceOp, value, axis: int | None):
        """One replica: values are already global; only an `axis` needs reducing."""
        if axis is None:
            return value
        if op == tf.distribute.ReduceOp.SUM:
            return tf.reduce_sum(value, axis=axis)
        return tf.reduce_mean(value, axis=axis)

    def distribute_datasets_from_function(
        self, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset], options=None
    ):
        """The task's global batches, as one device would read them."""
        del options
        return dataset_fn(tf.distribute.InputContext(1, 0, 1))
