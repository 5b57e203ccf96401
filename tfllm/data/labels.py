"""The label vocabulary of a classifier: learned from the training split, saved in the workdir.

Labels arrive as strings (a TSV column, a JSON value). If every training label
is an integer ("0", "1", "-1", ...) the classes are ordered numerically, so
SST-2's "0"/"1" become class ids 0/1 as users expect; otherwise they are sorted
as strings, so the order never depends on which label the file happens to
mention first. Evaluation and export read the saved vocabulary, never learn a
new one: an eval label the training split did not have is an error naming its
file:line, not a silently wrong class id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from tfllm.errors import DataError, WorkdirError
from tfllm.utils.io import atomic_write_json

LABELS_FILE = "labels.json"


def _as_int(label: str) -> int | None:
    try:
        return int(label)
    except ValueError:
        return None


class LabelVocab:
    """An ordered list of class names; class id = position in the list."""

    def __init__(self, names: Sequence[str]) -> None:
        names = [str(n) for n in names]
        if len(names) < 2:
            raise DataError(
                f"a classifier needs at least 2 distinct labels, found {len(names)}: {names}"
            )
        if len(set(names)) != len(names):
            raise DataError(f"duplicate label names: {names}")
        self.names = names
        self._index = {name: i for i, name in enumerate(names)}

    @classmethod
    def learn(cls, labels: Sequence[str], what: str = "training labels") -> LabelVocab:
        """Distinct labels of the training split, numeric order if all are integers."""
        distinct = set(labels)
        if len(distinct) < 2:
            raise DataError(
                f"{what}: a classifier needs at least 2 distinct labels, found "
                f"{len(distinct)} ({sorted(distinct)}); check config.data.label_field"
            )
        numbers = {label: _as_int(label) for label in distinct}
        if all(v is not None for v in numbers.values()):
            ordered = sorted(distinct, key=lambda label: numbers[label])
        else:
            ordered = sorted(distinct)
        return cls(ordered)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def encode(
        self, labels: Sequence[str], sources: Sequence[str] | None = None, what: str = "labels"
    ) -> np.ndarray:
        """Label strings -> int32 class ids; an unknown label raises naming its file:line."""
        ids = np.empty(len(labels), dtype=np.int32)
        for i, label in enumerate(labels):
            index = self._index.get(label)
            if index is None and _as_int(label) is not None:
                # "1" and "01" or "1 " name the same integer class.
                index = next(
                    (j for j, n in enumerate(self.names) if _as_int(n) == _as_int(label)), None
                )
            if index is None:
                where = f"{sources[i]}: " if sources is not None else ""
                raise DataError(
                    f"{what}: {where}unknown label {label!r}; the model was trained on {self.names}"
                )
            ids[i] = index
        return ids

    def save(self, workdir: str) -> None:
        atomic_write_json(os.path.join(workdir, LABELS_FILE), {"names": self.names})

    @classmethod
    def load(cls, workdir: str) -> LabelVocab:
        path = os.path.join(workdir, LABELS_FILE)
        if not os.path.isfile(path):
            raise WorkdirError(
                f"--workdir: {workdir} has no {LABELS_FILE} (train the classifier there first)"
            )
        try:
            with open(path, encoding="utf-8") as f:
                names = json.load(f)["names"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WorkdirError(f"{path}: unreadable label vocabulary ({e})") from None
        return cls(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and other.names == self.names

    def __repr__(self) -> str:
        return f"LabelVocab({self.names})"
