"""Dynamic batching: requests that arrive together are decoded together.

The HTTP side (asyncio) puts a `Job` on a queue and awaits its events; one
worker thread owns the model. It takes the first waiting job, keeps taking
jobs for up to `window_s` (or until `max_rows` rows), and hands the batch to
the engine, which sends each job its events (tokens as they are produced,
then a final one) through `Job.emit`. TensorFlow releases the GIL while it
computes, so the event loop keeps accepting requests meanwhile; they form
the next batch.

One thread, not a pool: a second concurrent batch on 2 cores would only
split the same cores, and the model's compiled functions are not
thread-safe to trace concurrently.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tfllm.serving.protocol import ClientError


@dataclass
class Job:
    """One request's work and the channel its results go back on.

    `payload` is what the engine needs (prompt ids and settings, or texts);
    `rows` how many batch rows it takes. Events are dicts; the last one has
    `"done": True` (or `"error"`). `cancelled` is set when the client goes
    away: the engine stops producing for it and frees its row.
    """

    payload: Any
    rows: int = 1
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop | None = None

    def emit(self, event: dict) -> None:
        """Thread-safe: queue `event` for the request handler (from the worker)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    async def next_event(self) -> dict:
        return await self.events.get()


class Engine(Protocol):
    """A loaded model that runs a batch of jobs and emits their events."""

    def run_batch(self, jobs: list[Job], more: Callable[[int], list[Job]]) -> None:
        """Runs `jobs`; an engine that can take requests mid-batch pulls them
        with `more(n)` (at most n queued jobs, without waiting)."""


class Batcher:
    """The queue and the worker thread in front of an engine."""

    def __init__(
        self,
        engine: Engine,
        max_rows: int = 8,
        window_s: float = 0.005,
        max_queued: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.window_s = window_s
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self._held: Job | None = None  # too big for the last batch: first of the next
        self._on_batch = on_batch
        self.batches = 0
        self.rows_served = 0
        self._thread = threading.Thread(target=self._work, name="tfllm-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        """Queues `job` (from the event loop); a full queue is a 503."""
        job.loop = asyncio.get_running_loop()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ClientError("the server is busy (request queue full); retry later", 503) from None
        return job

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def take_waiting(self, n: int) -> list[Job]:
        """Up to `n` queued jobs that are still wanted, without waiting (worker thread)."""
        taken: list[Job] = []
        while len(taken) < n:
            if self._held is not None:
                job, self._held = self._held, None
            else:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
            if job is None:  # close(): no more
                self._queue.put(None)
                break
            if not job.cancelled.is_set():
                taken.append(job)
        self.rows_served += len(taken)
        return taken

    def _collect(self, first: Job) -> list[Job]:
        """`first` plus whatever arrives within the window, up to `max_rows` rows."""
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.window_s
        while rows < self.max_rows:
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                job = self._queue.get(timeout=remaining) if remaining else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            if rows + job.rows > self.max_rows:
                self._held = job
                break
            batch.append(job)
            rows += job.rows
        return batch

    def _work(self) -> None:
        while True:
            first, self._held = (self._held, None) if self._held else (self._queue.get(), None)
            if first is None:
                return
            batch = [j for j in self._collect(first) if not j.cancelled.is_set()]
            if not batch:
                continue
            try:
                self.engine.run_batch(batch, self.take_waiting)
            except Exception as e:  # the server survives; the batch's clients learn why
                for job in batch:
                    job.emit({"error": f"{type(e).__name__}: {e}", "status": 500})
            self.batches += 1
            self.rows_served += sum(j.rows for j in batch)
            if self._on_batch is not None:
                self._on_batch(len(batch))
