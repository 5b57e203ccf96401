"""One flag, `config.runtime.strategy`, picks the tf.distribute strategy.

The training loop only talks to the returned `tf.distribute.Strategy` (scope,
`distribute_datasets_from_function`, `run`, `reduce`), so every strategy that
fits that interface slots in here without touching the loop.
"""

from __future__ import annotations

import json
import os

import ml_collections
import tensorflow as tf

from tfllm.errors import ConfigError


def configure_logical_cpus(n: int) -> None:
    """Splits the host CPU into `n` logical devices (Mirrored on a laptop).

    Must run before TensorFlow initialises its devices, i.e. before the first op.
    """
    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:  # devices already initialised with another split
        raise ConfigError(
            f"config.runtime.logical_cpus: cannot split the CPU into {n} devices now ({e})"
        ) from None


def create_strategy(runtime: ml_collections.ConfigDict) -> tf.distribute.Strategy:
    """Builds the strategy named by `runtime.strategy`."""
    name = runtime.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "config.runtime.strategy: 'multi_worker' reads the cluster from TF_CONFIG, "
                "which is not set"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"config.runtime.tpu: no TPU reachable at {runtime.tpu or '(auto)'!r}: {first}"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"config.runtime.strategy: unsupported strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one task that writes summaries, metrics and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and "chief" not in cluster
