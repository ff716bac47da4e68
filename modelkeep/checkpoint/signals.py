"""SIGTERM/SIGINT become a request the training loop polls, so it can checkpoint and exit cleanly.

A scheduler's SIGTERM (pre-emption, ``scancel``, ``docker stop``) or a Ctrl-C
must not kill the process in the middle of a step. ``SignalGuard`` replaces the
handlers while the loop runs: the first signal only sets ``requested``; the
loop saves a checkpoint at the next step boundary, prints
``resume_message(...)`` and stops. A second SIGINT restores the default
behaviour and raises ``KeyboardInterrupt`` at once, for a user who really
wants out.

Handlers can only be installed from the main thread; elsewhere the guard is
inert (``installed`` is False) and the previous handlers stay in place.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Iterable


class SignalGuard:
    """Call order: ``with SignalGuard() as guard:`` -> poll ``guard.requested`` at each step boundary.

    >>> with SignalGuard() as guard:            # doctest: +SKIP
    ...     for batch in batches:
    ...         train_step(batch)
    ...         if guard.requested:
    ...             manager.save(state, position); manager.close()
    ...             print(guard.resume_message("modelkeep train --resume ..."))
    ...             break
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = tuple(signals)
        self.requested: str | None = None  # the name of the signal received, e.g. "SIGTERM"
        self.signum: int | None = None
        self.installed = False
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        """The conventional status for a process ended by the received signal (128 + number), 0 if none."""
        return 128 + self.signum if self.signum else 0

    def install(self) -> "SignalGuard":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        self.installed = True
        return self

    def uninstall(self) -> None:
        if not self.installed:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        self.installed = False

    def __enter__(self) -> "SignalGuard":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.signum = signum

    def resume_message(self, resume_command: str, *, checkpoint: str | None = None) -> str:
        """One line telling the user what happened and how to continue."""
        saved = f"checkpoint {checkpoint} saved" if checkpoint else "checkpoint saved"
        return f"modelkeep: received {self.requested or 'a stop request'}; {saved}. Resume with: {resume_command}"
