"""Stopping a run on SIGINT/SIGTERM at a point where it can resume.

A signal raises a flag; the run then saves a checkpoint and stops. Where it is
safe, the flag is also a `tf.Variable` that the traced inner loop reads after
every step (`stop_flag`, `tfllm.training.step.make_train_loop`), so a run with
a long `steps_per_loop` stops within a step of the signal instead of finishing
the loop (minutes on long documents). Python runs a signal handler only once
the main thread is back in Python, i.e. after the whole `tf.function` call, so
the variable is set from a watcher thread woken through `signal.set_wakeup_fd`.
Under multi_worker every worker must stop at the same step, so there the flag
is agreed on by a vote between loops. Kept apart from the loop because signal
handling is process state that must be restored whatever happens.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import tensorflow as tf
from absl import logging

from tfllm.distribute.strategy import is_multi_worker, is_parameter_server

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_flag(strategy: object) -> tf.Variable | None:
    """The variable the inner loop reads after each step to stop early, or None
    where an early stop inside the loop is not safe.

    - multi_worker: each step's gradient all-reduce is collective, and a signal
      reaches one worker only; a worker leaving its loop early would leave the
      others waiting in that all-reduce. Its workers keep stopping between
      loops, on the `StopVote` (a per-step vote would cost a collective a step).
    - parameter_server: the loops run on the workers as closures the chief
      scheduled (`tfllm.training.coordination`); the chief stops after them.

    Everywhere else (one device, mirrored, TPU, tensor or pipeline parallel)
    one process runs every replica's step, so stopping after any step is
    consistent. The variable lives on the host, outside any strategy scope.
    """
    if is_multi_worker(strategy) or is_parameter_server(strategy):
        return None
    with tf.init_scope(), tf.device("/cpu:0"):
        return tf.Variable(False, trainable=False, name="stop_requested")


class StopSignal:
    """Turns SIGINT/SIGTERM into `received` (checked between inner loops) and,
    given a `stop_flag` variable, into that flag too (read inside the loop).
    """

    def __init__(self, flag: tf.Variable | None = None) -> None:
        self.received: int | None = None
        self.flag = flag
        self._previous: dict[int, object] = {}
        self._wakeup: tuple[int, int] | None = None  # (read end, write end)
        self._previous_wakeup = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if self.flag is not None:
            self.flag.assign(False)
            self._watch()
        return self

    def _watch(self) -> None:
        """Sets the flag from a thread as soon as a stop signal arrives.

        The interpreter writes each signal's number to the wakeup fd from its
        C-level handler, at once, while the Python handler waits for the main
        thread to leave the `tf.function`.
        """
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._wakeup = (read, write)
        flag = self.flag

        def watch() -> None:
            while data := os.read(read, 64):  # b"": the write end closed in __exit__
                if any(number in _STOP_SIGNALS for number in data):
                    flag.assign(True)

        self._watcher = threading.Thread(target=watch, name="stop-signal", daemon=True)
        self._watcher.start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.received is not None:  # second Ctrl-C: stop right away
            raise KeyboardInterrupt
        self.received = signum
        where = "this step" if self._wakeup is not None else "this loop"
        logging.warning("Signal %d received: stopping after %s and saving.", signum, where)

    def __exit__(self, *exc: object) -> None:
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            read, write = self._wakeup
            os.close(write)  # ends the watcher's read
            if self._watcher is not None:
                self._watcher.join()
            os.close(read)
            self._wakeup = self._watcher = None
            self.flag.assign(False)
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
