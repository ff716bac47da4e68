"""sharded: a sharded checkpoint (torch.distributed.checkpoint, JSON manifest) vs one durable single-file save.

A stack of square Linear layers (about 25M parameters; ``--quick``: about 4M) with its Adam state, on the CPU:

* save: ``save_sharded`` in one process (no process group) and on two ranks (FSDP2 ``fully_shard``, gloo on
  loopback; each rank writes half, timed from a barrier before the save to a barrier after the commit) versus
  a synchronous durable ``CheckpointManager.save`` and ``torch.save`` + fsync of the same state. Every modelkeep
  save is durable (fsync of each file, rename, folder fsync) and hashes everything it writes (xxh3-128).
* load: ``load_sharded`` into a fresh model's state dict (one process, every chunk hash-checked) versus
  ``CheckpointManager.restore`` and ``torch.load(weights_only=True)`` of the same state, and on two ranks.

The two-rank figures come from two worker processes (``python -m benchmarks.bench_sharded --worker ...``);
their start-up (importing torch, building the model) is not timed. Goal: a one-process sharded save takes at
most 1.5x the durable single-file save (they write the same bytes; the sharded one adds DCP's planning).
Run alone with ``python -m benchmarks.bench_sharded [--quick]``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from ._harness import Case, Context, Report, Row, Verdict, fsync_path, human_bytes, interleave, remove

NAME = "sharded"
DESCRIPTION = "sharded checkpoint save/load (1 and 2 ranks) vs a durable single-file save of the same state"


def _model(width: int, layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    blocks: list[torch.nn.Module] = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks)


def _trained(width: int, layers: int, shard: bool = False):
    """The model with one Adam step taken (so the moments exist); under FSDP2 when ``shard``."""
    model = _model(width, layers)
    if shard:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh("cpu", (int(os.environ["WORLD_SIZE"]),)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(4, width)).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def _state_dict(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run(ctx: Context) -> Report:
    from modelkeep.checkpoint import CheckpointManager, CheckpointState, KeepLastN, Position
    from modelkeep.checkpoint.sharded import load_sharded, save_sharded

    width, layers = (1024, 4) if ctx.quick else (2048, 6)
    model, optimizer = _trained(width, layers)
    params = sum(p.numel() for p in model.parameters())
    tmp = ctx.subdir("sharded")
    ctx.log(f"sharded: {params / 1e6:.1f}M parameters + Adam")
    state = _state_dict(model, optimizer)
    manager = CheckpointManager(tmp / "file", keep=KeepLastN(1), asynchronous=False, durable=True)
    torch_file = tmp / "torch.pt"
    counter = iter(range(1, 10**9))
    saves = interleave([
        Case("sharded save, 1 process", lambda _: save_sharded(tmp / "sharded", next(counter), state, {}, keep=1)),
        Case("CheckpointManager durable save",
             lambda _: manager.save(CheckpointState(model, optimizer), Position(0, 0, next(counter)))),
        Case("torch.save + fsync", lambda _: (torch.save(state, torch_file), fsync_path(torch_file)),
             teardown=lambda s, r: remove(torch_file)),
    ], ctx.reps)
    sharded_bytes = _size(tmp / "sharded")
    file_bytes = manager.list()[-1].size
    torch.save(state, torch_file)
    fresh_model, fresh_optimizer = _trained(width, layers)
    target = _state_dict(fresh_model, fresh_optimizer)
    loads = interleave([
        Case("sharded load, 1 process", lambda _: load_sharded(tmp / "sharded", target)),
        Case("CheckpointManager restore", lambda _: manager.restore(CheckpointState(fresh_model, fresh_optimizer))),
        Case("torch.load(weights_only=True)", lambda _: torch.load(torch_file, weights_only=True)),
    ], ctx.reps)
    manager.close()
    two = _two_ranks(tmp / "two-ranks", width, layers, ctx.reps)
    rows = [
        Row("save", "sharded save, 1 process", saves["sharded save, 1 process"], sharded_bytes,
            ref="CheckpointManager durable save", alt="torch.save + fsync", note="DCP + raw shards + JSON manifest"),
        Row("save", "sharded save, 2 ranks", two["save"], sharded_bytes, ref="CheckpointManager durable save",
            note="FSDP2, gloo; each rank writes its half"),
        Row("save", "CheckpointManager durable save", saves["CheckpointManager durable save"], file_bytes),
        Row("save", "torch.save + fsync", saves["torch.save + fsync"], torch_file.stat().st_size),
        Row("load", "sharded load, 1 process", loads["sharded load, 1 process"], sharded_bytes,
            ref="CheckpointManager restore", alt="torch.load(weights_only=True)", note="every chunk hash-checked"),
        Row("load", "sharded load, 2 ranks", two["load"], sharded_bytes, ref="CheckpointManager restore"),
        Row("load", "CheckpointManager restore", loads["CheckpointManager restore"], file_bytes),
        Row("load", "torch.load(weights_only=True)", loads["torch.load(weights_only=True)"],
            torch_file.stat().st_size),
    ]
    report = Report(NAME, f"sharded — {params / 1e6:.1f}M parameters + Adam on cpu, "
                          f"{human_bytes(sharded_bytes)} per checkpoint", rows)
    report.compute_ratios()
    report.verdicts = [Verdict("sharded save (1 process) / durable single-file save",
                               report.find("sharded save, 1 process").ratio, 1.5)]
    report.info.update({"parameters": params, "sharded_bytes": sharded_bytes, "file_bytes": file_bytes})
    return report


# --------------------------------------------------------------------------- two ranks


def _two_ranks(folder: Path, width: int, layers: int, reps: int) -> dict[str, list[float]]:
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    processes = [subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_sharded", "--worker", str(rank), str(port), str(folder),
         str(width), str(layers), str(reps)], cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in range(2)]
    outputs = [process.communicate(timeout=600)[0].decode(errors="replace") for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a two-rank worker failed:\n{outputs[0][-3000:]}\n{outputs[1][-3000:]}")
    return json.loads((folder / "timings.json").read_text())


def _worker(rank: int, port: str, folder: Path, width: int, layers: int, reps: int) -> None:
    import torch.distributed as dist

    from modelkeep.checkpoint.sharded import load_sharded, save_sharded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, optimizer = _trained(width, layers, shard=True)
    state = _state_dict(model, optimizer)
    timings: dict[str, list[float]] = {"save": [], "load": []}
    for step in range(reps + 1):  # the first of each is a warm-up
        dist.barrier()
        started = time.perf_counter()
        save_sharded(folder / "checkpoints", step + 1, state, {}, keep=1)
        dist.barrier()
        saved = time.perf_counter()
        load_sharded(folder / "checkpoints", state)
        dist.barrier()
        if step:
            timings["save"].append(saved - started)
            timings["load"].append(time.perf_counter() - saved)
    if rank == 0:
        (folder / "timings.json").write_text(json.dumps(timings))
    dist.destroy_process_group()


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        rank, port, folder, width, layers, reps = argv[1:7]
        _worker(int(rank), port, Path(folder), int(width), int(layers), int(reps))
        return 0
    from rich.console import Console

    from ._harness import print_report, scratch_dir

    quick = "--quick" in argv
    console = Console(width=160)
    with scratch_dir() as tmp:
        report = run(Context(quick=quick, reps=2 if quick else 5, tmp=tmp, console=console))
    print_report(console, report)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
