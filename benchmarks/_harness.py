"""Shared helpers for the benchmarks: timing, interleaved medians, fsync, temp dirs, tables.

A benchmark module (``bench_*.py``) exposes ``NAME``, ``DESCRIPTION`` and
``run(ctx: Context) -> Report``. It builds ``Case`` objects (an untimed
``setup``, a timed ``run``, an untimed ``teardown``), hands them to
``interleave`` and turns the timings into ``Row`` objects grouped in tables.
``__main__`` prints every report with ``print_report`` and can dump them all
as JSON.

Interleaving: each repetition runs every case once, round-robin, and the
starting case rotates from one repetition to the next, so slow drift (page
cache filling, disk write-back, thermal state) hits every tool alike. The
reported figure is the median of the repetitions.

Page cache: we cannot drop it (no privileges), so loads run against a warm
cache unless ``--cold`` asks ``evict`` to call ``posix_fadvise(DONTNEED)`` on
each file before each load (it only drops clean pages, which the kernel honours
for unprivileged processes on Linux; it is a best effort).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import secrets
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

BENCH_ROOT = Path(__file__).resolve().parent
DEFAULT_TMP_ROOT = BENCH_ROOT / ".tmp"


# --------------------------------------------------------------------------- context


@dataclasses.dataclass
class Context:
    """What every benchmark gets: options, a console and a scratch folder on the disk under test."""

    quick: bool
    reps: int
    tmp: Path
    console: Console
    cold: bool = False
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def log(self, message: str) -> None:
        self.console.log(message)

    def subdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def scratch_dir(root: Path = DEFAULT_TMP_ROOT, *, keep: bool = False) -> Iterator[Path]:
    """A fresh folder under ``root`` (default ``benchmarks/.tmp``), removed on exit."""
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = root / f"run-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir()
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                # Leave the root only if something else (a concurrent run) is still in it.
                remaining = [p for p in root.iterdir() if p.name != ".gitignore"]
                if not remaining:
                    shutil.rmtree(root, ignore_errors=True)


def describe_disk(path: Path) -> dict[str, str]:
    """Mount point, device and filesystem type holding ``path`` (from /proc/mounts where available)."""
    path = path.resolve()
    mount = path
    while not os.path.ismount(mount):
        mount = mount.parent
    info = {"path": str(path), "mount": str(mount), "device": "?", "fstype": "?"}
    with contextlib.suppress(OSError):
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == str(mount) and len(fields[1]) >= len(best):
                best = fields[1]
                info["device"], info["fstype"] = fields[0], fields[2]
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(path)
        info["free_gb"] = f"{usage.free / 1e9:.1f}"
    tmp_dev = None
    with contextlib.suppress(OSError):
        tmp_dev = os.stat("/tmp").st_dev
    info["same_disk_as_/tmp"] = str(tmp_dev == os.stat(path).st_dev)
    return info


def machine_info() -> dict[str, str]:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }
    for module in ("safetensors", "numpy", "xxhash"):
        with contextlib.suppress(Exception):
            info[module] = __import__(module).__version__ if module != "xxhash" else __import__(module).VERSION
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_gb"] = f"{int(line.split()[1]) / 1e6:.1f}"
    return info


# --------------------------------------------------------------------------- file helpers


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync an already written file by path (what a careful caller does after a non-durable save)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def evict(path: str | os.PathLike[str]) -> None:
    """Best-effort removal of a (clean, fsynced) file's pages from the page cache."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE: Any = None
SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start write-back of dirty pages in the range, do not wait


def writeback_supported() -> bool:
    """Whether ``start_writeback`` can do anything here (Linux libc with sync_file_range)."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = False
        with contextlib.suppress(Exception):
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
            _SYNC_FILE_RANGE = function
    return bool(_SYNC_FILE_RANGE)


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Ask Linux to start writing ``[offset, offset+nbytes)`` to disk now (sync_file_range), without waiting.

    Returns False where that is unavailable; the caller's fsync then does it all.
    """
    if not writeback_supported():
        return False
    return _SYNC_FILE_RANGE(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE) == 0


def settle() -> None:
    """Between timed runs: collect garbage so one tool's leftovers do not slow the next."""
    gc.collect()


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Case:
    """One tool in one comparison. ``run(state)`` is timed; ``setup``/``teardown`` are not."""

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    teardown: Callable[[Any, Any], None] = lambda state, result: None
    note: str = ""


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleave(cases: Sequence[Case], reps: int, *, warmup: bool = True,
               on_rep: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per case over ``reps`` round-robin repetitions (start rotated each repetition).

    With ``warmup`` every case runs once, untimed, first (imports, allocator, first-touch costs).
    """
    timings: dict[str, list[float]] = {case.name: [] for case in cases}
    rounds = ([-1] if warmup else []) + list(range(reps))
    for rep in rounds:
        shift = max(rep, 0) % len(cases)
        for case in list(cases[shift:]) + list(cases[:shift]):
            state = case.setup()
            settle()
            seconds, result = time_call(lambda: case.run(state))
            case.teardown(state, result)
            del result
            settle()
            if rep >= 0:
                timings[case.name].append(seconds)
        if on_rep is not None and rep >= 0:
            on_rep(rep)
    return timings


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Row:
    group: str
    case: str
    samples: list[float]
    nbytes: int | None = None
    ref: str | None = None        # case name this row's ratio is against (same group unless prefixed)
    alt: str | None = None        # a second reference, shown as its own ratio column
    note: str = ""
    ratio: float | None = None
    ratio_alt: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median else 0.0

    @property
    def gbps(self) -> float | None:
        return self.nbytes / self.median / 1e9 if self.nbytes and self.median else None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group, "case": self.case, "median_s": self.median, "min_s": self.best,
            "samples_s": self.samples, "bytes": self.nbytes, "gb_per_s": self.gbps,
            "ref": self.ref, "ratio_to_ref": self.ratio, "alt": self.alt, "ratio_to_alt": self.ratio_alt,
            "spread": self.spread, "note": self.note,
        }


@dataclasses.dataclass
class Verdict:
    goal: str
    value: float | None
    limit: float
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {"goal": self.goal, "value": self.value, "limit": self.limit, "passed": self.passed,
                "detail": self.detail}


@dataclasses.dataclass
class Report:
    name: str
    title: str
    rows: list[Row]
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def find(self, case: str) -> Row:
        for row in self.rows:
            if row.case == case:
                return row
        raise KeyError(case)

    def compute_ratios(self) -> None:
        for row in self.rows:
            if row.ref is not None:
                row.ratio = row.median / self.find(row.ref).median
            if row.alt is not None:
                row.ratio_alt = row.median / self.find(row.alt).median

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "info": self.info, "notes": self.notes,
                "rows": [row.to_json() for row in self.rows],
                "verdicts": [verdict.to_json() for verdict in self.verdicts]}


# --------------------------------------------------------------------------- printing


def _fmt_ratio(value: float | None) -> str:
    """A ratio, coloured: green at most 1.0 (as fast or faster), yellow up to 1.5, red beyond."""
    if value is None:
        return ""
    text = f"{value:.2f}×"
    if value <= 1.0:
        return f"[green]{text}[/]"
    if value <= 1.5:
        return f"[yellow]{text}[/]"
    return f"[red]{text}[/]"


def print_report(console: Console, report: Report) -> None:
    report.compute_ratios()
    table = Table(title=report.title, title_justify="left", show_lines=False)
    table.add_column("group", style="cyan")
    table.add_column("case", no_wrap=True)
    table.add_column("median s", justify="right")
    table.add_column("min s", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("GB/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("ratio 2", justify="right")
    previous_group = None
    for row in report.rows:
        if row.group != previous_group:
            if previous_group is not None:
                table.add_section()
            refs = "  ".join(f"{label} = × {escape(name)}" for label, name in (("ratio", row.ref), ("ratio 2", row.alt)) if name)
            table.add_row(f"[bold]{row.group}[/]", f"[dim]{refs}[/]" if refs else "", *[""] * 6)
        table.add_row(
            "",
            escape(row.case) + (f" [dim]({escape(row.note)})[/]" if row.note else ""),
            f"{row.median:.3f}", f"{row.best:.3f}", f"{row.spread:.0%}",
            f"{row.gbps:.2f}" if row.gbps is not None else "",
            _fmt_ratio(row.ratio), _fmt_ratio(row.ratio_alt),
        )
        previous_group = row.group
    console.print(table)
    for key, value in report.info.items():
        console.print(f"  [dim]{key}:[/] {escape(str(value))}")
    for note in report.notes:
        console.print(f"  [dim]note:[/] {escape(note)}")
    for verdict in report.verdicts:
        mark = {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "[yellow]N/A [/]"}[verdict.passed]
        value = "n/a" if verdict.value is None else f"{verdict.value:.2f}×"
        console.print(f"  {mark} {verdict.goal}: {value} (limit {verdict.limit:.2f}×)"
                      + (f" — {verdict.detail}" if verdict.detail else ""))
    console.print()


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
