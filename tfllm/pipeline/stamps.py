"""What each pipeline stage's output was made from, so a re-run knows what is stale.

A stage's output file existing is not enough for it to be up to date: a
re-run with more training steps or a changed `--config.*` would pair new
metrics with old samples and exports. When a stage completes, the pipeline
records a *stamp* for it in `<run workdir>/.pipeline/stamps.json` (keyed by
the stage's progress name): digests of the config values the stage used, and
the identity of the upstream checkpoint it read (its name and a digest of the
`config.json` it was trained with). On the next run the stage is up to date
only when its output exists *and* its recorded stamp equals the one it would
have now; otherwise it re-runs and its progress line says why.

Training is not stamped here: its checkpoints are its record (`config.json`
beside them), checked by `tfllm.pipeline.common.trained_config_matches`.
No TensorFlow here: stamps are plain JSON, read before any stage runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import ml_collections

from tfllm.utils.io import atomic_write_json, read_json

STAMPS_FILE = os.path.join(".pipeline", "stamps.json")


def digest(value: object) -> str:
    """A short SHA-256 of `value` as canonical JSON (sorted keys, tuples as lists)."""
    if isinstance(value, ml_collections.ConfigDict | ml_collections.FrozenConfigDict):
        value = value.to_dict()
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_CHECKPOINT_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.M)


def latest_checkpoint_name(workdir: str) -> str | None:
    """`ckpt-40`: the latest checkpoint named in `W/checkpoints/checkpoint`, or None.

    Read from the checkpoint state file (what `tf.train.latest_checkpoint`
    reads) so that no TensorFlow is needed to decide what is up to date.
    """
    path = os.path.join(workdir, "checkpoints", "checkpoint")
    try:
        with open(path, encoding="utf-8") as f:
            found = _CHECKPOINT_LINE.search(f.read())
    except (OSError, UnicodeDecodeError):
        return None
    return os.path.basename(found.group(1)) if found else None


def checkpoint_identity(workdir: str) -> dict:
    """What a stage reads from a trained workdir: its latest checkpoint's name and a
    digest of the config it was trained with (a retrain from scratch to the same
    step has the same name but not the same config)."""
    return {
        "checkpoint": latest_checkpoint_name(workdir),
        "trained_config": digest(read_json(os.path.join(workdir, "config.json"))),
    }


def file_identity(path: str) -> dict:
    """A source file's (or a directory's files') path, size and modification time:
    enough to notice a re-fetched or different checkpoint without hashing
    hundreds of megabytes on every run."""
    path = os.path.abspath(path)
    files = [path]
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names
        )
    return {
        "path": path,
        "files": {
            os.path.relpath(f, path) if f != path else os.path.basename(f): [
                os.stat(f).st_size,
                os.stat(f).st_mtime_ns,
            ]
            for f in files
        },
    }


@dataclass(frozen=True)
class Stamp:
    """What a stage's output is made from.

    `config`: label → the values the stage used (a config section, derived
    settings); stored as digests. `upstream`: label → the identity of what it
    read (`checkpoint_identity`, or another stage's stamp when chained); stored
    as is, so the stamps file says which checkpoint each artifact came from.
    """

    config: Mapping[str, object] = field(default_factory=dict)
    upstream: Mapping[str, Mapping] = field(default_factory=dict)

    def record(self) -> dict:
        return {
            "config": {label: digest(value) for label, value in self.config.items()},
            "upstream": {label: dict(value) for label, value in self.upstream.items()},
        }


def stale_reason(recorded: dict | None, stamp: Stamp) -> str | None:
    """Why an output recorded as `recorded` is not what `stamp` would make now (None: it is)."""
    if not recorded:
        return "no record of the config and checkpoint it was made from"
    now = stamp.record()
    before = recorded.get("upstream", {})
    for label, identity in now["upstream"].items():
        was = before.get(label)
        if was == identity:
            continue
        if not was:
            return f"no record of the {label} it was made from"
        name, before_name = identity.get("checkpoint"), was.get("checkpoint")
        if name != before_name:
            return f"{label} {name} ≠ {before_name} it was made from"
        return f"{label} {name} was retrained with another config since"
    configs = recorded.get("config", {})
    changed = [
        label
        for label in sorted(set(now["config"]) | set(configs))
        if now["config"].get(label) != configs.get(label)
    ]
    if changed:
        return f"{', '.join(changed)} changed since it was made"
    return None


class StampStore:
    """`<workdir>/.pipeline/stamps.json`: one stamp per stage name, written atomically."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, STAMPS_FILE)
        self._stamps: dict | None = None

    def _all(self) -> dict:
        if self._stamps is None:
            try:
                self._stamps = read_json(self.path).get("stages", {})
            except (OSError, ValueError):  # unreadable: as if nothing were recorded
                self._stamps = {}
        return self._stamps

    def get(self, name: str) -> dict | None:
        return self._all().get(name)

    def put(self, name: str, stamp: Stamp) -> None:
        stamps = self._all()
        stamps[name] = stamp.record()
        atomic_write_json(self.path, {"stages": stamps})
