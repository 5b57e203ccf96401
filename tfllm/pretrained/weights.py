"""Copying checked arrays into Keras variables, shared by every family's name map."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tfllm.errors import DataError


def assign(variable, array: np.ndarray, name: str) -> None:
    """`variable.assign(array)` after checking the shape, naming the tensor when it differs."""
    if tuple(array.shape) != tuple(variable.shape):
        raise DataError(
            f"tensor {name!r}: shape {tuple(array.shape)} does not fit the model's "
            f"{tuple(variable.shape)}"
        )
    variable.assign(np.asarray(array, dtype=variable.dtype))


def check_all_used(
    tensors: Mapping[str, np.ndarray], used: Iterable[str], ignorable: tuple[str, ...], origin: str
) -> None:
    """Refuses a checkpoint with tensors the map did not read (other than known buffers).

    A left-over weight means the checkpoint has parts the model lacks (biases,
    an extra norm): importing it would silently drop them and change the numbers.
    """
    used = set(used)
    extra = sorted(n for n in tensors if n not in used and not n.endswith(ignorable))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise DataError(f"{origin}: tensor {extra[0]!r} is not used by the model{more}")
