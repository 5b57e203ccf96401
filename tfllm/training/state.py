"""What the training loop's parts hand each other between inner loops.

The step reports a `LoopStats` per inner loop; the controller keeps the run's
`TrainState` (the per-loop records written to `history.json` and the measured
speeds whose median goes into `metrics.json`), and the summaries, progress and
checkpoint code read them. Plain dataclasses, so none of those parts depends
on another to know their shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopStats:
    """What one inner loop reports back to Python."""

    step: int
    loss: float
    grad_norm: float
    learning_rate: float
    tokens_per_second: float
    examples_per_second: float


@dataclass
class TrainState:
    history: list[dict] = field(default_factory=list)
    tokens_per_second: list[float] = field(default_factory=list)
    examples_per_second: list[float] = field(default_factory=list)
