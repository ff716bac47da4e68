"""Dynamic batching: requests for one model are queued and run together, each caller getting its own rows back.

A ``Batcher`` takes jobs (a NumPy array of rows each) from the event loop. The delay has Triton's meaning
(``max_queue_delay_microseconds``): the oldest queued job waits at most ``max_delay`` seconds *from the moment
it was queued* for others to batch with -- a lone request under a delay D waits D and then runs alone; one that
queued while a batch was running may already be past its deadline and runs as soon as the runner is free.
Waiting stops early when ``max_batch_size`` rows are queued, or the largest of the ``preferred_batch_sizes``.
When the wait ends, the batch is the largest preferred size the queued rows fill (when preferred sizes are
given and one is filled), else every queued row up to ``max_batch_size``. ``max_delay=0`` never waits: a lone
request runs at once, and requests still batch under load (those that queue while a batch runs form the next).
The rows are concatenated and ``runner`` runs on them in the model's own worker thread, so the event loop
never blocks on a forward pass. While a batch runs, the next one gathers. ``runner(rows)`` returns a dict of arrays (or lists) whose first axis is the rows; each job
receives the slice of every entry that belongs to its rows. When a batch of several jobs fails, each job
is re-run alone, so one caller's bad input fails only that caller. A job larger than ``max_batch_size``
runs alone. ``close()`` lets queued jobs finish and then stops (a model replaced by a new version drains
this way: no request is dropped). This module knows nothing of HTTP or torch.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Runner = Callable[[np.ndarray], dict[str, Any]]
LOGGER = logging.getLogger("modelkeep.serve")


@dataclass
class _Job:
    rows: np.ndarray
    future: asyncio.Future = field(repr=False)
    queued: float  # when it was queued, on the event loop's clock: its deadline counts from here

    @property
    def size(self) -> int:
        return len(self.rows)


class Batcher:
    """Queues jobs for one runner and runs them in batches (see the module's docstring)."""

    def __init__(self, runner: Runner, *, max_batch_size: int, max_delay: float,
                 executor: concurrent.futures.Executor, preferred_batch_sizes: tuple[int, ...] = (),
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        self.runner, self.max_batch_size, self.max_delay = runner, max_batch_size, max_delay
        self.preferred = tuple(sorted({size for size in preferred_batch_sizes if 0 < size <= max_batch_size}))
        # waiting stops once this many rows are queued: the largest preferred size, or the batch limit
        self._enough = self.preferred[-1] if self.preferred else max_batch_size
        self.executor = executor
        self.on_batch = on_batch  # (rows, jobs, seconds) after each batch: metrics
        self._pending: collections.deque[_Job] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    async def submit(self, rows: np.ndarray) -> dict[str, Any]:
        """Queue ``rows`` and wait for their results: a dict of the runner's outputs, sliced to these rows."""
        if self._closing:
            raise RuntimeError("this batcher is closed")  # callers take batchers from the live table only
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (a test client's): start over on it
            self._loop, self._arrived, self._pending = loop, asyncio.Event(), collections.deque()
            self._task = loop.create_task(self._serve())
        job = _Job(rows, loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    def reopen(self, executor: concurrent.futures.Executor) -> None:
        """Take jobs again after ``close`` (an app whose lifespan starts a second time), on ``executor``."""
        self.executor, self._closing, self._loop = executor, False, None

    async def close(self) -> None:
        """Finish the queued jobs, then stop."""
        self._closing = True
        if self._arrived is not None:
            self._arrived.set()
        if self._task is not None and not self._task.done() and self._loop is asyncio.get_running_loop():
            await self._task

    async def _serve(self) -> None:
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            batch = self._take()
            await self._run(batch)

    async def _gather(self) -> None:
        """Wait until enough rows are queued, the oldest job's delay has passed since it was queued, or we are
        closing. With no delay this returns at once."""
        if self.max_delay <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].queued + self.max_delay
        while not self._closing and sum(job.size for job in self._pending) < self._enough:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The first job and the queued jobs that fit beside it: within the size, of the same row shape and
        dtype (inputs of variable length batch only with their equals); the others keep their places. With
        preferred sizes, the batch stops at the largest one the queued rows fill."""
        first = self._pending.popleft()
        limit = self._limit(first)
        batch, rows, kept = [first], first.size, collections.deque()
        while self._pending and rows < limit:
            job = self._pending.popleft()
            fits = job.rows.shape[1:] == first.rows.shape[1:] and job.rows.dtype == first.rows.dtype
            if fits and rows + job.size <= limit:
                batch.append(job)
                rows += job.size
            else:
                kept.append(job)
        kept.extend(self._pending)
        self._pending = kept
        return batch

    def _limit(self, first: _Job) -> int:
        """The most rows this batch takes: ``max_batch_size``, or the largest preferred size the queued jobs
        that could join ``first`` reach (counted greedily, as ``_take`` adds them)."""
        if not self.preferred:
            return self.max_batch_size
        rows = first.size
        for job in self._pending:
            if job.rows.shape[1:] == first.rows.shape[1:] and job.rows.dtype == first.rows.dtype:
                if rows + job.size <= self.max_batch_size:
                    rows += job.size
        filled = [size for size in self.preferred if first.size <= size <= rows]
        return filled[-1] if filled else self.max_batch_size

    async def _run(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # a caller that went away needs no answer
        if not batch:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([job.rows for job in batch])
            outputs = await loop.run_in_executor(self.executor, self.runner, rows)
        except Exception as exc:  # noqa: BLE001 - handed to the caller(s), whose handler maps it to a status
            if len(batch) == 1:
                _settle(batch[0].future, exception=exc)
                return
            for job in batch:  # find whose rows failed: each job alone
                await self._run([job])
            return
        start = 0
        for job in batch:
            stop = start + job.size
            _settle(job.future, result={name: values[start:stop] for name, values in outputs.items()})
            start = stop
        if self.on_batch is not None:
            try:
                self.on_batch(len(rows), len(batch), loop.time() - started)
            except Exception:  # noqa: BLE001 - a metrics failure must never stop the batcher
                LOGGER.exception("reporting a batch failed")


def _settle(future: asyncio.Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


__all__ = ["Batcher", "Runner"]
