"""A localhost cluster for tfllm-launch: free ports, the cluster spec, each TF_CONFIG."""

from __future__ import annotations

import json
import socket


def free_ports(n: int) -> list[int]:
    """`n` distinct free localhost ports (bound together, so none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(workers: int, ps: int, chief: bool) -> dict[str, list[str]]:
    """The `cluster` part of TF_CONFIG on localhost."""
    names = (["chief"] if chief else []) + ["worker"] * workers + ["ps"] * ps
    ports = iter(free_ports(len(names)))
    cluster: dict[str, list[str]] = {}
    for name in names:
        cluster.setdefault(name, []).append(f"localhost:{next(ports)}")
    return cluster


def tf_config(cluster: dict[str, list[str]], task_type: str, index: int) -> str:
    """One task's TF_CONFIG."""
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
