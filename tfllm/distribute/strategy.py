"""One flag, `config.runtime.strategy`, picks the tf.distribute strategy.

The synchronous strategies (default, one_device, mirrored, multi_worker, tpu)
all fit one interface (scope, `distribute_datasets_from_function`, `run`,
`reduce`), so the training loop drives them alike. `parameter_server` is
asynchronous: only its chief runs the training program (scheduling steps on
workers through a `ClusterCoordinator`), while its workers and parameter
servers run `serve_cluster_task`, a plain TensorFlow server.

Multi-process jobs read the cluster from `TF_CONFIG`, as every cluster
launcher sets it (`tfllm-launch` does the same on localhost).

`tensor_parallel` and `pipeline_stages` give a `PlacementStrategy` (a DTensor
mesh, GPipe stages) that places the model's variables itself. Callers never
ask which kind they hold: `build_model`, `replicas`, `describe`,
`host_copy` and `placement` below answer for any strategy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable

import keras
import ml_collections
import tensorflow as tf

from tfllm.config import INFERENCE_STRATEGIES, base_config
from tfllm.distribute.pipeline_parallel import PipelineStrategy
from tfllm.distribute.placement import PlacementStrategy
from tfllm.distribute.tensor_parallel import HostCopy, MeshStrategy
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


def configure_threads(intra_op: int, inter_op: int) -> None:
    """Thread pools of this process (0 keeps TensorFlow's default: all cores).

    Several workers on one host each default to every core and then fight
    over them; `intra_op_threads=1` per worker is how scaling is measured here.
    """
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def cluster_task() -> tuple[str | None, int]:
    """(task type, index) of this process in `TF_CONFIG`; (None, 0) when unset."""
    task = _tf_config().get("task", {})
    return task.get("type"), int(task.get("index", 0))


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise ConfigError("TF_CONFIG: must be a JSON object with 'cluster' and 'task'")
    return parsed


def _require_cluster(name: str, needs: tuple[str, ...]) -> dict:
    config = _tf_config()
    if not config:
        raise ConfigError(
            f"config.runtime.strategy: {name!r} reads the cluster from TF_CONFIG, which is not "
            "set (launch with tfllm-launch, or set it as docs/distributed.md shows)"
        )
    cluster = config.get("cluster", {})
    missing = [job for job in needs if not cluster.get(job)]
    if missing:
        raise ConfigError(
            f"TF_CONFIG: strategy {name!r} needs a cluster with {' and '.join(needs)} jobs; "
            f"{', '.join(missing)} missing (cluster has {', '.join(cluster) or 'no jobs'})"
        )
    if "type" not in config.get("task", {}):
        raise ConfigError("TF_CONFIG: no 'task' ({'type': ..., 'index': ...}) for this process")
    return config


def serve_cluster_task(runtime: ml_collections.ConfigDict) -> bool:
    """Runs this process as a parameter-server cluster's worker or ps, if it is one.

    Under `parameter_server` only the chief runs the training program; the
    other tasks are TensorFlow servers that the chief's coordinator sends work
    to. Blocks until the process is stopped; returns False on the chief (and
    for every other strategy), which then goes on to train.
    """
    if runtime.strategy != "parameter_server":
        return False
    _require_cluster("parameter_server", ("chief", "worker", "ps"))
    task_type, task_id = cluster_task()
    if task_type not in ("worker", "ps"):
        return False
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    # A worker's server runs several closures' ops at once; with too few
    # inter-op threads the 2-core case deadlocks (DESIGN §2).
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=max(4, workers + 1))
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=task_type,
        task_index=task_id,
        protocol=resolver.rpc_layer or "grpc",
        config=config,
        start=True,
    )
    print(f"{task_type} {task_id}: serving at {server.target}", flush=True)
    chief = resolver.cluster_spec().as_dict()["chief"][0]
    _serve_until_the_chief_is_done(f"{task_type} {task_id}", chief)  # `server` stays alive
    return True


# How long a signalled worker/ps keeps serving for a chief that is still saving:
# under Kubernetes' default 30 s grace period, which then sends SIGKILL anyway.
STOP_GRACE_SECONDS = 25.0


def _serve_until_the_chief_is_done(label: str, chief: str) -> None:
    """`server.join()`, except that SIGTERM lets the chief save first.

    A cluster manager (Kubernetes deleting a job) signals every task at once.
    Dying at once, the workers and ps take the chief's save with them: its
    coordinator waits for closures nobody runs, or its variables are gone. So
    the first SIGTERM (or Ctrl-C) only starts a grace period: this task keeps
    serving until the chief's address stops answering (it has saved and
    exited) or `STOP_GRACE_SECONDS` pass, then exits 130; a second signal
    exits at once. `server.join()` would block signals in C++, hence the
    Python loop (the server runs on its own threads).
    """
    asked: list[float] = []

    def on_signal(signum: int, frame) -> None:
        del frame
        if asked:
            os._exit(128 + signum)  # a second signal: stop now
        asked.append(time.monotonic())
        print(f"{label}: asked to stop; serving until the chief has saved", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, _, port = chief.rpartition(":")
    while True:
        time.sleep(0.2)
        if not asked:
            continue
        waited = time.monotonic() - asked[0]
        if waited > STOP_GRACE_SECONDS or not _answers(host, int(port)):
            print(f"{label}: stopping ({waited:.1f} s after the signal)", flush=True)
            os._exit(130)  # TF's server has no clean shutdown; nothing of ours to flush


def _answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (the chief's server)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def create_strategy(runtime: ml_collections.ConfigDict) -> tf.distribute.Strategy:
    """Builds the strategy named by `runtime.strategy` (a DTensor mesh under tensor_parallel,
    GPipe stages under pipeline_stages)."""
    name = runtime.strategy
    if int(runtime.get("tensor_parallel", 1)) > 1:
        return MeshStrategy(int(runtime.tensor_parallel))
    if int(runtime.get("pipeline_stages", 1)) > 1:
        return PipelineStrategy(int(runtime.pipeline_stages), int(runtime.num_microbatches))
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
        _require_cluster("multi_worker", ("worker",))
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[runtime.get("collective", "auto")]
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation
            )
        )
    if name == "parameter_server":
        return _parameter_server_strategy(runtime)
    if name == "tpu":
        try:
            _check_tpu_address(runtime.tpu)
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        # OSError: a TPU *name* is looked up through the GCE metadata server,
        # which is unreachable (URLError) off Google Cloud.
        except (ValueError, tf.errors.OpError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"config.runtime.tpu: no TPU reachable at {runtime.tpu or '(auto)'!r}: {first}"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"config.runtime.strategy: unsupported strategy {name!r}")


TPU_CONNECT_TIMEOUT_SECONDS = 10


def _check_tpu_address(tpu: str) -> None:
    """Fails fast on a `grpc://host:port` nobody listens at.

    `experimental_connect_to_cluster` waits forever for such an address; a
    plain TCP connect with a timeout turns that into an error line.
    """
    if not tpu.startswith("grpc://"):
        return  # "" / "local" (TPU VM) / a Cloud TPU name, resolved by TensorFlow
    host, _, port = tpu.removeprefix("grpc://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=TPU_CONNECT_TIMEOUT_SECONDS).close()
    except ValueError:
        raise ValueError(f"not a grpc://host:port address: {tpu!r}") from None


def _parameter_server_strategy(
    runtime: ml_collections.ConfigDict,
) -> tf.distribute.experimental.ParameterServerStrategy:
    """ParameterServerStrategy whose large variables are split over the ps tasks.

    `MinSizePartitioner` shards any variable of at least
    `runtime.ps_shard_min_bytes` (the token embedding / tied LM head first)
    into up to one shard per parameter server, so no single ps holds or serves
    all of it (the parameter-server model-sharding recipe).
    """
    _require_cluster("parameter_server", ("chief", "worker", "ps"))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(resolver.cluster_spec().as_dict()["ps"])
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=int(runtime.get("ps_shard_min_bytes", 256 << 10)), max_shards=num_ps
    )
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner
    )


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when replicas live in more than one process (signals must be agreed on)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._num_workers > 1  # noqa: SLF001 - no public worker count
    )


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Blocks until every worker of a multi-worker strategy reaches this point.

    One tiny all-reduce; used so the chief writes shared files (tokenizer,
    labels) before the other workers read them.
    """
    if not is_multi_worker(strategy):
        return
    value = strategy.run(lambda: tf.constant(1.0))
    strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)


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


# --------------------------------------------------- questions any strategy answers
def placement(strategy) -> PlacementStrategy | None:
    """The strategy as a `PlacementStrategy` (mesh, pipeline stages), else None."""
    return strategy if isinstance(strategy, PlacementStrategy) else None


def build_model(strategy, build: Callable[[], keras.Model]) -> keras.Model:
    """Builds the model for `strategy`: sharded on a mesh, placed per pipeline stage,
    else as `build()` does (a tf.distribute strategy's scope places it)."""
    placed = placement(strategy)
    return placed.build_model(build) if placed is not None else build()


def replicas(strategy) -> int:
    """How many slices a global batch of rows is cut into: the replicas, or a
    mesh's batch axis."""
    placed = placement(strategy)
    return placed.replicas() if placed is not None else int(strategy.num_replicas_in_sync)


def describe(strategy) -> str:
    """`mirrored × 2 replica(s)`, `tensor parallel 2 (mesh 1 × 2)`, ... for summaries."""
    placed = placement(strategy)
    if placed is not None:
        return placed.describe()
    name = {
        "_DefaultDistributionStrategy": "default",
        "OneDeviceStrategy": "one_device",
        "MirroredStrategy": "mirrored",
        "MultiWorkerMirroredStrategy": "multi_worker",
        "CollectiveAllReduceStrategy": "multi_worker",  # what MultiWorkerMirrored builds
    }.get(type(strategy).__name__, type(strategy).__name__)
    return f"{name} × {strategy.num_replicas_in_sync} replica(s)"


def takes_sharded_inputs(strategy) -> bool:
    """True when the model takes its inputs as DTensors on a mesh, so per-row
    inference must go through `tfllm.distribute.rows.RowSharder`."""
    placed = placement(strategy)
    return placed is not None and placed.sharded_inputs


def finite_batches(strategy, dataset_fn: Callable) -> Iterable:
    """One pass over a finite input (an eval split) under `strategy`. A mesh reads it
    through `MeshStrategy.finite_batches`, which stops before the DTensor iterator's
    end (reaching it breaks the mesh in TF 2.21)."""
    placed = placement(strategy)
    bounded = getattr(placed, "finite_batches", None)
    if bounded is not None:
        return bounded(dataset_fn)
    return strategy.distribute_datasets_from_function(dataset_fn)


def host_copy(strategy, build: Callable[[], keras.Model]) -> HostCopy | None:
    """A one-device twin for eager code (text samples) when the model's weights live
    sharded on a mesh; None when the model itself takes host tensors."""
    placed = placement(strategy)
    return HostCopy(build) if placed is not None and placed.sharded_inputs else None


# ------------------------------------------------------------------ inference


def inference_runtime(
    saved: ml_collections.ConfigDict,
    strategy: str,
    logical_cpus: int | None,
    tensor_parallel: int | None,
) -> ml_collections.ConfigDict:
    """The runtime section inference runs under.

    `strategy="checkpoint"` takes the workdir's own `config.runtime` (how it
    was trained); any other value starts from one device. `logical_cpus` /
    `tensor_parallel`, when given, override either.
    """
    if strategy == "checkpoint":
        runtime = ml_collections.ConfigDict(saved.to_dict())
        if runtime.strategy not in INFERENCE_STRATEGIES:
            raise ConfigError(
                f"--strategy=checkpoint: the run was trained with {runtime.strategy!r}, which "
                f"inference does not run under; pick one of {', '.join(INFERENCE_STRATEGIES)}"
            )
    else:
        runtime = base_config().runtime
        runtime.strategy = strategy
    if logical_cpus is not None:
        runtime.logical_cpus = logical_cpus
    if tensor_parallel is not None:
        runtime.tensor_parallel = tensor_parallel
    if int(runtime.tensor_parallel) > 1 and runtime.strategy != "default":
        raise ConfigError(
            "--tensor_parallel: runs on its own DTensor mesh (its batch axis is the data "
            f"parallelism); use it with --strategy=default, not {runtime.strategy!r}"
        )
    if int(runtime.get("pipeline_stages", 1)) > 1:
        runtime.pipeline_stages = 1  # inference runs the whole model on every replica
        runtime.num_microbatches = 1
    return runtime


def create_inference_strategy(runtime: ml_collections.ConfigDict):
    """Logical CPUs and threads first (before TensorFlow picks devices), then the strategy."""
    configure_logical_cpus(int(runtime.logical_cpus))
    configure_threads(int(runtime.intra_op_threads), int(runtime.inter_op_threads))
    return create_strategy(runtime)
