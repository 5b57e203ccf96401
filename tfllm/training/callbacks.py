"""What the controller does around the inner loops without changing them.

The profiler window, early stopping and the progress display each watch the
loop and act at loop boundaries; none of them touches the step or the
checkpoint. Kept out of the controller so that the loop there reads as the
sequence of things that happen, and each of these can be read (and changed)
on its own.
"""

from __future__ import annotations

import math
import sys

import keras
import tensorflow as tf

from tfllm.training.state import LoopStats


class ProfileWindow:
    """Traces optimizer steps start+1 .. stop with the TensorFlow profiler.

    `config.runtime.profile_steps=[start, stop]`; the trace lands in
    `W/tensorboard/train/plugins/profile/` for TensorBoard's Profile tab
    (`pip install tensorboard-plugin-profile`). Inner loops are cut at both
    edges so the trace holds exactly those steps; start after the first loop,
    which includes tracing. Only the chief profiles.
    """

    def __init__(self, steps: list[int], logdir: str, chief: bool) -> None:
        self.start, self.stop = (steps[0], steps[1]) if steps and chief else (-1, -1)
        self.logdir = logdir
        self.active = False

    def steps_to_edge(self, step: int) -> int:
        for edge in (self.start, self.stop):
            if step < edge:
                return edge - step
        return sys.maxsize

    def before(self, step: int) -> None:
        if step == self.start:
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def after(self, step: int) -> None:
        if self.active and step >= self.stop:
            tf.profiler.experimental.stop()
            self.active = False
            print(f"Profiled steps {self.start + 1}-{self.stop}: {self.logdir}", flush=True)

    def __enter__(self) -> ProfileWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:  # stopped early (error, signal, early stopping): keep what was traced
            tf.profiler.experimental.stop()
            self.active = False


class EarlyStopping:
    """Stops after `patience` evals whose loss did not beat the best by `min_delta`.

    Its state is rebuilt from the run's history, so a resumed run keeps counting.
    """

    def __init__(self, patience: int, min_delta: float, history: list[dict]) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_evals = 0
        for record in history:
            if "eval_loss" in record:
                self._update(record["eval_loss"])

    def _update(self, loss: float) -> None:
        if loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
        else:
            self.bad_evals += 1

    def should_stop(self, loss: float) -> bool:
        self._update(loss)
        return self.patience > 0 and self.bad_evals >= self.patience

    def reason(self, step: int) -> str:
        return (
            f"Early stopping at step {step}: eval loss has not improved on "
            f"{self.best:.4f} for {self.bad_evals} evaluations"
        )


class Progress:
    """Keras' Progbar on a terminal; one plain line per loop in logs and pipes
    (Progbar's in-place redraw turns into one unreadable line there)."""

    def __init__(self, total_steps: int, start: int, unit: str = "tokens") -> None:
        self.total = total_steps
        self.unit = unit
        self.short = "tok/s" if unit == "tokens" else "ex/s"
        self.bar = None
        if sys.stdout.isatty():
            self.bar = keras.utils.Progbar(total_steps, stateful_metrics=["loss", self.short, "lr"])
            self.bar.update(start)

    def note(self, message: str) -> None:
        """A line of its own, below the bar on a terminal."""
        print(("\n" if self.bar is not None else "") + message, flush=True)

    def update(self, stats: LoopStats) -> None:
        rate = stats.tokens_per_second if self.unit == "tokens" else stats.examples_per_second
        if self.bar is not None:
            self.bar.update(
                stats.step,
                values=[
                    ("loss", stats.loss),
                    (self.short, round(rate)),
                    ("lr", stats.learning_rate),
                ],
            )
            return
        print(
            f"step {stats.step}/{self.total}  loss {stats.loss:.4f}  "
            f"grad_norm {stats.grad_norm:.3f}  lr {stats.learning_rate:.3g}  "
            f"{rate:,.0f} {self.unit}/s",
            flush=True,
        )
