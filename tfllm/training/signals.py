"""Stopping a run on SIGINT/SIGTERM at a point where it can resume.

A `tf.function` cannot be interrupted mid-loop without losing its step, so a
signal only raises a flag; the controller checks it between inner loops, saves
a checkpoint and stops. Under multi_worker every worker must stop at the same
step, so the flag is agreed on by a vote. Kept apart from the loop because
signal handling is process state that must be restored whatever happens.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import tensorflow as tf
from absl import logging

from tfllm.distribute.strategy import is_multi_worker


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between inner loops.

    A tf.function cannot be interrupted mid-loop without losing its step, so
    we finish the current loop, save a checkpoint, then stop.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.received is not None:  # second Ctrl-C: stop right away
            raise KeyboardInterrupt
        self.received = signum
        logging.warning("Signal %d received: stopping after this loop and saving.", signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StopVote:
    """Whether any worker was asked to stop (SIGTERM / Ctrl-C): all stop together.

    A preemption notice reaches one process; under multi_worker every
    worker must save the same step (the save is collective) and then exit,
    else the others hang in the next all-reduce. One all-reduce (SUM) of a
    0/1 flag per inner loop does that (what `PreemptionCheckpointHandler`
    does per step, without its own counter and restore logic, which would
    duplicate the loop's).
    """

    def __init__(self, strategy: tf.distribute.Strategy) -> None:
        self.strategy = strategy
        self._vote = None  # traced on first use, reused by later runs

    def __call__(self, local: bool) -> bool:
        if not is_multi_worker(self.strategy):
            return local
        if self._vote is None:
            strategy = self.strategy

            @tf.function
            def vote(flag):
                votes = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)

            self._vote = vote
        return float(self._vote(tf.constant(1.0 if local else 0.0))) > 0
