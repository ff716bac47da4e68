"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME] [--json OUT]``.

To add a benchmark, write ``benchmarks/bench_<name>.py`` with ``NAME``,
``DESCRIPTION`` and ``run(ctx) -> Report`` (see ``_harness.py``) and append its
module name to ``BENCHMARKS``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from ._harness import DEFAULT_TMP_ROOT, Context, describe_disk, machine_info, print_report, scratch_dir

# Order is the run order.
BENCHMARKS = [
    "bench_save_load",
    "bench_checkpoint",
    "bench_inspect",
    "bench_train",
    "bench_onnx",
    "bench_import",
    "bench_transfer",
    "bench_registry",
    "bench_registry_concurrency",
    "bench_registry_remote",
    "bench_serve",
    "bench_ensemble",
    "bench_distributed",
    "bench_sharded",
]


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def load_modules() -> dict:
    modules = {}
    for module_name in BENCHMARKS:
        module = importlib.import_module(f"{__package__}.{module_name}")
        modules[module.NAME] = module
    return modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models and 2 repetitions (a smoke run)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (repeatable, or comma-separated)")
    parser.add_argument("--reps", type=int, help="repetitions per case (default 5, quick 2)")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write all results as JSON to OUT")
    parser.add_argument("--tmp", type=Path, default=DEFAULT_TMP_ROOT,
                        help=f"scratch folder root on the disk to test (default {DEFAULT_TMP_ROOT})")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--cold", action="store_true",
                        help="evict each file from the page cache (posix_fadvise) before each load")
    parser.add_argument("--touch", choices=["page", "full"],
                        help="after a load, only read one element per 4 KiB page, or only sum every element "
                             "(default: both, as two groups)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    console = Console()
    if not console.is_terminal:  # piped or redirected: rich would fall back to 80 columns
        console = Console(width=160)
    modules = load_modules()
    if args.list:
        for name, module in modules.items():
            console.print(f"[bold]{name}[/]: {module.DESCRIPTION}")
        return 0
    selected = list(modules)
    if args.only:
        selected = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
        unknown = [name for name in selected if name not in modules]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {list(modules)}")
    reps = args.reps if args.reps is not None else (2 if args.quick else 5)
    if reps < 1:
        parser.error("--reps must be at least 1")

    results = {"machine": machine_info(), "quick": args.quick, "reps": reps, "benchmarks": {}}
    with scratch_dir(args.tmp.resolve(), keep=args.keep) as tmp:
        disk = describe_disk(tmp)
        results["scratch"] = disk
        console.print(f"[bold]modelkeep benchmarks[/] — {', '.join(selected)}; "
                      f"{'quick' if args.quick else 'full'}, {reps} reps")
        console.print(f"  machine: {results['machine']}")
        console.print(f"  scratch: {disk['path']} on {disk['device']} ({disk['fstype']}, mounted at "
                      f"{disk['mount']}, {disk.get('free_gb', '?')} GB free, same disk as /tmp: "
                      f"{disk['same_disk_as_/tmp']})")
        console.print()
        ctx = Context(quick=args.quick, reps=reps, tmp=tmp, console=console, cold=args.cold,
                      options={"touch": args.touch})
        for name in selected:
            start, load_before = time.perf_counter(), _loadavg()
            report = modules[name].run(ctx)
            report.info["wall_s"] = round(time.perf_counter() - start, 1)
            load_after = _loadavg()
            report.info["load_avg_1min"] = f"{load_before:.2f} at start, {load_after:.2f} at end"
            if max(load_before, load_after) > 0.5:
                report.notes.append("other processes kept the CPUs busy during this run (load average above); "
                                    "expect noisier figures, trust medians and re-run for close calls")
            print_report(console, report)
            results["benchmarks"][name] = report.to_json()

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
