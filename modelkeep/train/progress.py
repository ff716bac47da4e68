"""Progress output: a rich progress bar in a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import sys
from typing import Any, Protocol


class Progress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, loss: Any) -> None:
        """One step done; ``loss`` may be a device tensor, read only when the bar redraws."""
    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def _format_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if k not in ("epoch",))


class QuietProgress:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, loss: Any) -> None: ...
    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class LineProgress(QuietProgress):
    """One line per epoch, for logs and pipes."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        print(f"epoch {epoch}/{epochs}  {_format_logs(logs)}", file=self.stream, flush=True)


class BarProgress:
    """A rich bar per epoch with the running loss and ETA; the finished epoch stays as one line."""

    # The bar is redrawn at most this often (in steps), so drawing never costs a noticeable share of a step.
    REFRESH_EVERY = 8

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self.bar.start()
        self.task = None
        self.pending = 0
        self.loss = 0.0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.task = self.bar.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", loss=0.0)

    def advance(self, loss: Any) -> None:
        self.pending += 1
        self.loss = loss
        if self.pending >= self.REFRESH_EVERY:
            self.bar.update(self.task, advance=self.pending, loss=float(self.loss))
            self.pending = 0

    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        self.bar.remove_task(self.task)
        self.pending = 0
        self.console.print(f"epoch {epoch}/{epochs}  {_format_logs(logs)}")

    def close(self) -> None:
        self.bar.stop()


def make_progress(mode: str | bool = "auto") -> Progress:
    """``"auto"``: a bar in a terminal, lines otherwise; ``"bar"``, ``"lines"``, or False/"quiet"."""
    if mode in (False, "quiet", "none", None):
        return QuietProgress()
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "lines"
    if mode == "bar":
        return BarProgress()
    return LineProgress()
