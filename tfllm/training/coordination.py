"""Parameter-server training: scheduling inner loops on workers from the chief.

Under `ParameterServerStrategy` the chief does not run steps itself; a
`ClusterCoordinator` schedules them as closures on the workers, each with its
own input pipeline, and the updates land asynchronously on the ps tasks. The
differences from every other strategy are all here — how the input is made,
how steps are run and counted, and what a lost parameter server means — so
the controller stays one loop for all strategies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import tensorflow as tf

from tfllm.distribute.strategy import is_parameter_server
from tfllm.training.errors import ClusterFailure
from tfllm.training.step import ParamGroups, TrainLoop
from tfllm.training.tasks import Task


def create_coordinator(
    strategy: tf.distribute.Strategy,
) -> tf.distribute.coordinator.ClusterCoordinator | None:
    """A coordinator for parameter-server training, else None.

    Parameter-server training is asynchronous: the chief schedules steps on
    workers through a coordinator; each step is one worker's batch.
    """
    if not is_parameter_server(strategy):
        return None
    return tf.distribute.coordinator.ClusterCoordinator(strategy)


def per_worker_iterator(
    coordinator: tf.distribute.coordinator.ClusterCoordinator,
    strategy: tf.distribute.Strategy,
    task: Task,
    global_batch: int,
) -> Iterator:
    """One input pipeline on each parameter-server worker.

    The dataset function is traced once and runs on every worker, so a
    fixed seed would give all workers the same batches; each worker seeds
    its shuffle from its own clock instead. Asynchronous training is not
    reproducible step by step anyway (updates interleave as they arrive).
    """
    batch = global_batch

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        seed = tf.cast(tf.timestamp() * 1e6, tf.int64) % (2**31 - 1)
        return task.train_dataset(batch, seed, ctx)

    return iter(
        coordinator.create_per_worker_dataset(
            lambda: strategy.distribute_datasets_from_function(dataset_fn)
        )
    )


def run_steps_on_workers(
    coordinator: tf.distribute.coordinator.ClusterCoordinator,
    train_loop: TrainLoop,
    iterator: Iterator,
    num_steps: int,
    start: int,
    param_groups: ParamGroups,
) -> tuple[float, float]:
    """Schedules `num_steps` steps as closures over the workers, waits for all.

    Closures of a few steps keep every worker busy while amortising the
    scheduling round trip; a closure whose worker dies is re-run on another
    (ClusterCoordinator's fault tolerance). The optimizers' step counters
    are then set to the steps actually scheduled (`start + num_steps`): Keras
    increments `iterations` by read-then-assign, which loses counts when
    workers update at once.
    """
    workers = max(1, coordinator.strategy.extended._num_workers)  # noqa: SLF001
    chunk = max(1, num_steps // (2 * workers))
    scheduled: list[tuple[int, object]] = []
    done = 0
    while done < num_steps:
        k = min(chunk, num_steps - done)
        value = coordinator.schedule(train_loop, args=(iterator, tf.constant(k, tf.int32)))
        scheduled.append((k, value))
        done += k
    coordinator.join()
    results = [(k, value.fetch()) for k, value in scheduled]
    for optimizer, _ in param_groups:
        optimizer.iterations.assign(start + num_steps)
    loss = sum(k * float(value[0]) for k, value in results) / num_steps
    return loss, float(results[-1][1][1])


def cluster_failure(
    error: tf.errors.UnavailableError | tf.errors.AbortedError, last_step: int, workdir: str
) -> ClusterFailure:
    """The one-line error for a parameter server (or the chief's link to it) gone.

    The coordinator absorbs worker failures; what reaches the chief is a
    parameter server lost, and the last checkpoint is where to resume.
    """
    message = str(getattr(error, "message", error))
    lost = sorted(set(re.findall(r"/job:ps/replica:\d+/task:\d+", message)))
    what = ", ".join(lost) or message.strip().splitlines()[0][:200]
    last = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return ClusterFailure(
        f"the parameter-server cluster failed after step {last_step} "
        f"({type(error).__name__}: {what}); last checkpoint: {last or 'none yet'}. "
        "Restart the cluster and run the same command to resume."
    )
