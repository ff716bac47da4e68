"""Progress output: a rich progress bar in a terminal, one plain line per epoch otherwise, or nothing.

The bar reads the running loss (a device tensor) only when it redraws, at most
a few times a second, so drawing never makes a step wait for the device.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Protocol


class Progress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, loss: Any) -> None:
        """One step done; ``loss`` may be a device tensor, read only when the bar redraws."""
    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def format_logs(logs: dict[str, Any]) -> str:
    parts = []
    for key, value in logs.items():
        if key == "epoch" or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {value:.2f}s" if key == "time" else f"{key} {value:.4g}")
    return "  ".join(parts)


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
        print(f"epoch {epoch}/{epochs}  {format_logs(logs)}", file=self.stream, flush=True)


class BarProgress:
    """A rich bar per epoch with the running loss, the last validation metrics, the epoch's ETA and the run's ETA.

    Each finished epoch stays on screen as one line.
    """

    # The bar reads the loss and redraws at most this often (seconds).
    REFRESH_SECONDS = 0.25

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(), TextColumn("[dim]run ETA {task.fields[run_eta]}"),
            console=self.console, transient=True, auto_refresh=False,
        )
        self.bar.start()
        self.task = None
        self.pending = 0
        self.next_draw = 0.0
        self.metrics = ""
        self.started = time.perf_counter()
        self.epoch_times: list[float] = []
        self.epoch_started = self.started

    def _run_eta(self, epoch: int, epochs: int) -> str:
        if not self.epoch_times:
            return "?"
        seconds = int(sum(self.epoch_times) / len(self.epoch_times) * (epochs - epoch + 1))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch_started = time.perf_counter()
        self.task = self.bar.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", loss=0.0,
                                      metrics=self.metrics, run_eta=self._run_eta(epoch, epochs))
        self.bar.refresh()

    def advance(self, loss: Any) -> None:
        self.pending += 1
        now = time.perf_counter()
        if now >= self.next_draw:
            self.bar.update(self.task, advance=self.pending, loss=float(loss))
            self.bar.refresh()
            self.pending = 0
            self.next_draw = now + self.REFRESH_SECONDS

    def end_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        self.epoch_times.append(time.perf_counter() - self.epoch_started)
        self.bar.remove_task(self.task)
        self.pending = 0
        # The bar shows the last validation's loss and first metric; the epoch line above it has them all.
        shown = [(k, v) for k, v in logs.items() if k.startswith("val_")][:2]
        self.metrics = "  ".join(f"{k} {v:.4g}" for k, v in shown)
        self.console.print(f"epoch {epoch}/{epochs}  {format_logs(logs)}")

    def close(self) -> None:
        self.bar.stop()


def make_progress(mode: str | bool | None = "auto") -> Progress:
    """``"auto"``: a bar in a terminal, lines otherwise; ``"bar"``, ``"lines"``, or False/"quiet"."""
    if mode in (False, "quiet", "none", None):
        return QuietProgress()
    if mode in ("auto", True):
        mode = "bar" if sys.stderr.isatty() else "lines"
    if mode == "bar":
        return BarProgress()
    if mode in ("lines", "line", "plain"):
        return LineProgress()
    from ..errors import ConfigError

    raise ConfigError(f"progress must be 'auto', 'bar', 'lines' or 'quiet', got {mode!r}")


def describe_position(epoch: int, batch: int, step: int) -> str:
    """A loop position in the words progress output uses (epochs counted from 1): ``epoch`` is the
    number of epochs completed, ``batch`` the batches done in the next one."""
    if batch == 0:
        return f"the end of epoch {epoch} (step {step})" if epoch else f"the start of epoch 1 (step {step})"
    return f"epoch {epoch + 1}, after batch {batch} (step {step})"
