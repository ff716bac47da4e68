"""distributed: steps per second of a 2-process DDP run against one process, on the same global batch.

An MLP (``--quick``: 256 -> 512 -> 512 -> 10; else 512 -> 2048 -> 2048 -> 10) trains on synthetic
data with a global batch of 256 on the CPU (gloo). Four ways, each a fresh set of processes:

* ``fit``, 1 process, 1 thread — the baseline of the scaling efficiency;
* ``fit``, 1 process, 2 threads — what one process makes of the same two cores (intra-op threads);
* ``fit`` under ``torchrun --nproc-per-node 2`` (``DataParallel``), 1 thread each, 128 samples per process;
* a plain PyTorch DDP loop under torchrun (what a user would otherwise write): the same model,
  optimizer and batches, no checkpoints, no metrics — the floor of what DDP costs here.

Steps per second are timed inside the processes from the first to the last optimizer step (the
start-up of torchrun and of the interpreters, reported separately, is not training).
Scaling efficiency = (2-process steps/s) / (2 x 1-process steps/s): 100% means the second
process halved the time of every step. On a machine of 2 cores shared with other work, as the
one this was written on, the number measures contention as much as DDP; the report prints the
core count and load so a reader can judge.

Each case runs as ``python -m benchmarks.bench_distributed --worker KIND OUT`` (under torchrun
for the 2-process cases), which writes its timings as JSON into ``OUT``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ._harness import Context, Report, Row

NAME = "distributed"
DESCRIPTION = "2-process DDP vs 1 process on the same global batch: steps/s and scaling efficiency (gloo, CPU)"
GLOBAL_BATCH = 256
ROOT = Path(__file__).resolve().parents[1]


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(features, hidden width, samples)."""
    return (256, 512, 8192) if quick else (512, 2048, 16384)


def _data(quick: bool):
    import numpy as np

    features, _, samples = _sizes(quick)
    generator = np.random.default_rng(0)
    x = generator.normal(size=(samples, features)).astype(np.float32)
    y = generator.integers(0, 10, size=samples)
    return x, y


def _spec(quick: bool) -> dict:
    features, width, _ = _sizes(quick)
    return {"name": "bench_mlp", "layers": [
        {"kind": "Input", "name": "x", "shape": [features]},
        {"kind": "Dense", "name": "hidden1", "units": width, "activation": "relu"},
        {"kind": "Dense", "name": "hidden2", "units": width, "activation": "relu"},
        {"kind": "Dense", "name": "logits", "units": 10}]}


class _StepClock:
    """Times the optimizer steps of a fit (first to last), the start-up and the first step excluded."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.steps = 0

    def on_step_end(self, state, logs) -> None:
        now = time.perf_counter()
        if self.steps == 0:
            self.first = now
        self.last, self.steps = now, self.steps + 1


def _worker_fit(quick: bool) -> dict:
    from modelkeep.data.targets import dataset_from_arrays
    from modelkeep.nn import build
    from modelkeep.train import fit
    from modelkeep.train.distributed import training_processes

    x, y = _data(quick)
    clock = _StepClock()
    with training_processes("auto") as strategy:
        fit(build(_spec(quick), seed=0), dataset_from_arrays(x, y, name="synthetic"), epochs=1,
            batch_size=GLOBAL_BATCH, learning_rate=1e-3, progress=False, device="cpu", strategy=strategy,
            callbacks=[clock])
        return {"rank": strategy.rank, "steps": clock.steps - 1, "seconds": clock.last - clock.first}


def _worker_plain_ddp(quick: bool) -> dict:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = (torch.as_tensor(a) for a in _data(quick))
    features, width, _ = _sizes(quick)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(features, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                torch.nn.ReLU(), torch.nn.Linear(width, 10))
    module = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[rank::world]
    local = GLOBAL_BATCH // world
    times = []
    for start in range(0, len(order) - local + 1, local):
        index = order[start:start + local]
        loss = torch.nn.functional.cross_entropy(module(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter())
    dist.destroy_process_group()
    return {"rank": rank, "steps": len(times) - 1, "seconds": times[-1] - times[0]}


def _worker(kind: str, out: Path, quick: bool) -> None:
    result = _worker_plain_ddp(quick) if kind == "plain-ddp" else _worker_fit(quick)
    if result["rank"] == 0:
        out.write_text(json.dumps(result))


def _launch(ctx: Context, kind: str, processes: int, threads: int) -> tuple[float, float]:
    """(steps/s, wall seconds of the whole launch) of one case."""
    out = ctx.subdir("distributed") / f"{kind}-{processes}-{threads}-{time.monotonic_ns()}.json"
    worker = ["-m", "benchmarks.bench_distributed", "--worker", kind, str(out)] + (["--quick"] if ctx.quick else [])
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *worker]
    else:
        command = [sys.executable, *worker]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    wall = time.perf_counter() - started
    result = json.loads(out.read_text())
    return result["steps"] / result["seconds"], wall


CASES = [  # (label, worker kind, processes, threads per process)
    ("fit, 1 process, 1 thread", "fit", 1, 1),
    ("fit, 1 process, 2 threads", "fit", 1, 2),
    ("fit, 2 processes (DDP), 1 thread each", "fit", 2, 1),
    ("plain torch DDP loop, 2 processes", "plain-ddp", 2, 1),
]


def run(ctx: Context) -> Report:
    reps = 1 if ctx.quick else max(1, min(ctx.reps, 3))
    cases = CASES[:3] if ctx.quick else CASES
    rates: dict[str, list[float]] = {label: [] for label, *_ in cases}
    walls: dict[str, list[float]] = {label: [] for label, *_ in cases}
    for rep in range(reps):
        for label, kind, processes, threads in cases[rep % len(cases):] + cases[:rep % len(cases)]:
            rate, wall = _launch(ctx, kind, processes, threads)
            rates[label].append(rate)
            walls[label].append(wall)
            ctx.log(f"{label}: {rate:.1f} steps/s (launch {wall:.1f} s)")
    # Rows hold seconds per step (the harness's unit), so a ratio below 1 is faster than the baseline.
    baseline = cases[0][0]
    rows = [Row("per step", label, [1 / r for r in rates[label]], ref=baseline if label != baseline else None,
                note=f"{sorted(rates[label])[len(rates[label]) // 2]:.1f} steps/s; launch "
                     f"{sorted(walls[label])[len(walls[label]) // 2]:.1f} s")
            for label, *_ in cases]
    median = {label: sorted(values)[len(values) // 2] for label, values in rates.items()}
    efficiency = median[cases[2][0]] / (2 * median[baseline])
    features, width, samples = _sizes(ctx.quick)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    report = Report(NAME, f"distributed — MLP {features}->{width}->{width}->10, global batch {GLOBAL_BATCH}, "
                          f"{samples} samples, gloo on {os.cpu_count()} cores (load {load:.1f})", rows)
    report.info.update({"scaling_efficiency": round(efficiency, 3), "cores": os.cpu_count(), "load_1min": load,
                        "steps_per_s": {k: round(v, 2) for k, v in median.items()}})
    report.notes.append(f"scaling efficiency {efficiency:.0%} = 2-process steps/s / (2 x 1-process, 1-thread "
                        "steps/s); start-up (interpreters, torchrun rendezvous) is excluded and shown as launch")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "OUT"), required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    _worker(args.worker[0], Path(args.worker[1]), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
