"""One background save at a time: writing, hashing and fsync happen off the training thread.

``BackgroundWriter.submit(job)`` starts ``job`` on a new (non-daemon) thread
after the previous job has finished, so at most one save is ever in flight and
an interpreter that exits normally still finishes the save it started. A job
that raises does not take the training thread down: its exception is kept and
handed back by the next ``wait``, which the caller turns into a report.
"""
from __future__ import annotations

import threading
from typing import Callable


class BackgroundWriter:
    """Call order: ``wait()`` (collect the previous job's error) -> ``submit(job)`` -> ... -> ``wait()``."""

    def __init__(self, name: str = "modelkeep-checkpoint-writer") -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` in the background once the job in flight (if any) has finished."""
        self._join()
        self._thread = threading.Thread(target=self._run, args=(job,), name=self.name, daemon=False)
        self._thread.start()

    def wait(self) -> BaseException | None:
        """Block until the job in flight ends; return (and forget) the exception of any failed job."""
        self._join()
        error, self._error = self._error, None
        return error

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # reported by wait(); a background thread has nowhere to raise
            self._error = exc
