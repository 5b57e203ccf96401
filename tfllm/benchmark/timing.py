"""Interleaved timing of competing implementations.

Running A's steps, then B's, lets a burst of load from another process land
on one side only; alternating A, B, A, B ... in rounds spreads machine noise
over both, so their ratio stays meaningful on a shared machine. The order
rotates from round to round (A B C, B C A, C A B, ...), so no side always
runs first, right after the others have warmed the caches or heated the CPU.
"""

from __future__ import annotations

from typing import Protocol


class Timed(Protocol):
    """One benchmarked implementation: `run_once` does one unit of work."""

    name: str

    def run_once(self) -> float:
        """Runs one step (train step or generate call); returns its wall seconds."""
        ...


def interleave(
    sides: list[Timed], warmup: int, repeats: int, per_repeat: int
) -> dict[str, list[float]]:
    """Warm every side up, then `repeats` rounds of `per_repeat` timed runs each,
    the order of the sides rotated by one every round.

    Warm-up runs (tracing, XLA compilation, first-touch allocation) are
    discarded. Returns each side's timed seconds, keyed by `name`.
    """
    for side in sides:
        for _ in range(warmup):
            side.run_once()
    seconds: dict[str, list[float]] = {side.name: [] for side in sides}
    for round_index in range(repeats):
        start = round_index % len(sides)
        for side in [*sides[start:], *sides[:start]]:
            seconds[side.name].extend(side.run_once() for _ in range(per_repeat))
    return seconds
