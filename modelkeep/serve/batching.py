"""Dynamic batching: requests for one model are queued and run together, each caller getting its own rows back.

A ``Batcher`` takes jobs (a NumPy array of rows each) from the event loop. Its task waits for a first job,
then for more until ``max_batch_size`` rows are queued or ``max_delay`` seconds have passed since that first
job (Triton's ``max_queue_delay_microseconds``), concatenates the rows and runs ``runner`` on them in the
model's own worker thread, so the event loop never blocks on a forward pass. While a batch runs, the next
one gathers. ``runner(rows)`` returns a dict of arrays (or lists) whose first axis is the rows; each job
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

    @property
    def size(self) -> int:
        return len(self.rows)


class Batcher:
    """Queues jobs for one runner and runs them in batches (see the module's docstring)."""

    def __init__(self, runner: Runner, *, max_batch_size: int, max_delay: float,
                 executor: concurrent.futures.Executor,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        self.runner, self.max_batch_size, self.max_delay = runner, max_batch_size, max_delay
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
        job = _Job(rows, loop.create_future())
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
        """Wait until a full batch is queued, the delay since the first job has passed, or we are closing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while not self._closing and sum(job.size for job in self._pending) < self.max_batch_size:
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
        dtype (inputs of variable length batch only with their equals); the others keep their places."""
        first = self._pending.popleft()
        batch, rows, kept = [first], first.size, collections.deque()
        while self._pending and rows < self.max_batch_size:
            job = self._pending.popleft()
            fits = job.rows.shape[1:] == first.rows.shape[1:] and job.rows.dtype == first.rows.dtype
            if fits and rows + job.size <= self.max_batch_size:
                batch.append(job)
                rows += job.size
            else:
                kept.append(job)
        kept.extend(self._pending)
        self._pending = kept
        return batch

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
