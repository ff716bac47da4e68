"""checkpoint: how long a checkpoint pauses training, how fast it reaches the disk, what it costs per step.

A stack of square Linear layers of about 100M parameters (``--quick``: about
10M) with its Adam state (one optimizer step taken, so the moments exist),
on the GPU when there is one, else on the CPU:

* (a) pause: the time an asynchronous checkpoint holds the training thread
  versus one synchronous ``torch.save`` of the same model and optimizer state
  dicts (page cache only, and with fsync). Goal: the pause is at most 5% of
  the synchronous save. With the deferred snapshot, ``save`` copies only what a
  forward pass may change and the background thread copies the weights and
  optimizer state; so the pause is measured over a realistic next step (save,
  forward, backward, ``fence``, optimizer step) as the synchronous part of
  ``save`` plus the time ``fence`` waited for the background copy. The whole
  step after a save versus a plain step is reported too (the background copy
  competes with forward and backward for memory bandwidth).
* (b) durable throughput: a synchronous, durable ``CheckpointManager.save``
  (write, xxh3 hashing, fsync, rename, folder fsync) versus the same number of
  bytes written with ``os.write`` and one ``fsync`` (the disk's limit).
* (c) steps per second of a plain training loop, without checkpoints and with
  an asynchronous checkpoint every N steps, and what that costs per checkpoint:
  the lost progress, (time with checkpoints - time without) / checkpoints,
  next to one durable ``torch.save`` (+ fsync) of the same state. Goal: at most
  25% of that ``torch.save`` and at most 1.05x the training time. Each
  checkpoint is followed by training steps (the loop runs half an interval
  past the last one, then waits for it), as in a real run, where only the
  last checkpoint of all is waited for. The process CPU time (all threads)
  spent per checkpoint is reported too, as a second view (torch's OpenMP
  workers spin while they wait, so on a shared machine it moves with the load
  as well: compare runs on a quiet machine).
"""
from __future__ import annotations

import os
import time

import torch

from ._harness import Case, Context, Report, Row, Verdict, fsync_path, human_bytes, interleave, remove

NAME = "checkpoint"
DESCRIPTION = "checkpoint pause (async vs torch.save), durable write throughput, steps/s with checkpoints"


def _model(width: int, layers: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks).to(device)


def _step(model, optimizer, batch, fence=None):
    optimizer.zero_grad(set_to_none=True)
    model(batch).pow(2).mean().backward()
    if fence is not None:
        fence()  # a deferred snapshot copy must be done before the step writes the weights
    optimizer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(ctx: Context) -> Report:
    from modelkeep.checkpoint import CheckpointManager, EveryNSteps, KeepLastN, Position, CheckpointState

    device = torch.device(ctx.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    width, layers = (1024, 10) if ctx.quick else (3072, 10)
    model = _model(width, layers, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = torch.randn(16, width, device=device)
    _step(model, optimizer, batch)
    params = sum(p.numel() for p in model.parameters())
    state = CheckpointState(model, optimizer)
    tmp = ctx.subdir("checkpoint")
    ctx.log(f"checkpoint: {params / 1e6:.1f}M parameters on {device}")

    # (a) pause ---------------------------------------------------------------------------
    async_manager = CheckpointManager(tmp / "async", keep=KeepLastN(1), asynchronous=True)
    counter = iter(range(1, 10**9))

    step_after_save: list[float] = []

    def async_pause(_):
        _sync(device)
        started = time.perf_counter()
        async_manager.save(state, Position(0, 0, next(counter)))
        sync_part = async_manager.last_pause_s
        _step(model, optimizer, batch, async_manager.fence)
        _sync(device)
        step_after_save.append(time.perf_counter() - started)
        return sync_part + async_manager.last_fence_wait_s

    def plain_step(_):
        _sync(device)
        _step(model, optimizer, batch)
        _sync(device)

    pauses: list[float] = []
    torch_file = tmp / "torch.pt"

    def torch_save(_):
        _sync(device)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, torch_file)

    def torch_save_fsync(_):
        torch_save(_)
        fsync_path(torch_file)

    cases = [
        Case("modelkeep async save (pause)", async_pause,
             teardown=lambda s, r: (pauses.append(r), async_manager.wait())),
        Case("torch.save", torch_save, teardown=lambda s, r: remove(torch_file)),
        Case("torch.save + fsync", torch_save_fsync, teardown=lambda s, r: remove(torch_file)),
        Case("plain training step", plain_step),
    ]
    timings = interleave(cases, ctx.reps)
    async_manager.close()
    timings["modelkeep async save (pause)"] = pauses[-ctx.reps:]  # the pause itself, not the call around it
    timings["save + next training step"] = step_after_save[-ctx.reps:]
    checkpoint_bytes = async_manager.list()[-1].size
    rows = [
        Row("pause", "modelkeep async save (pause)", timings["modelkeep async save (pause)"], checkpoint_bytes,
            ref="torch.save", alt="torch.save + fsync",
            note="sync part of save + fence wait before the next optimizer step"),
        Row("pause", "torch.save", timings["torch.save"], checkpoint_bytes),
        Row("pause", "torch.save + fsync", timings["torch.save + fsync"], checkpoint_bytes),
        Row("pause", "save + next training step", timings["save + next training step"],
            ref="plain training step", note="save, forward, backward, fence, step"),
        Row("pause", "plain training step", timings["plain training step"]),
    ]

    # (b) durable throughput --------------------------------------------------------------
    sync_manager = CheckpointManager(tmp / "sync", keep=KeepLastN(1), asynchronous=False, durable=True)
    raw_file = tmp / "raw.bin"
    payload = bytearray(os.urandom(1 << 20)) * (checkpoint_bytes >> 20)

    def durable_save(_):
        _sync(device)
        sync_manager.save(state, Position(0, 0, next(counter)))

    def raw_write(_):
        fd = os.open(raw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    timings.update(interleave([
        Case("modelkeep durable save", durable_save),
        Case("os.write + fsync (disk limit)", raw_write, teardown=lambda s, r: remove(raw_file)),
    ], ctx.reps))
    del payload
    rows += [
        Row("durable", "modelkeep durable save", timings["modelkeep durable save"], checkpoint_bytes,
            ref="os.write + fsync (disk limit)", note="write + xxh3 + fsync + rename + dir fsync"),
        Row("durable", "os.write + fsync (disk limit)", timings["os.write + fsync (disk limit)"],
            (checkpoint_bytes >> 20) << 20),
    ]

    # (c) steps per second ------------------------------------------------------------------
    checkpoints, every = (3, 10) if ctx.quick else (4, 10)
    steps = checkpoints * every + every // 2  # every checkpoint is followed by training, as in a real run
    cpu_seconds: dict[str, list[float]] = {}

    def loop(manager, name):
        def go(_):
            started = os.times()
            for step in range(1, steps + 1):
                _step(model, optimizer, batch, manager.fence if manager is not None else None)
                if manager is not None and manager.should_save(Position(0, step, step)):
                    manager.save(state, Position(0, step, step))
            _sync(device)
            if manager is not None:
                manager.wait()
            ended = os.times()
            cpu_seconds.setdefault(name, []).append(ended.user + ended.system - started.user - started.system)
        return go

    loop_manager = CheckpointManager(tmp / "loop", save_on=EveryNSteps(every), keep=KeepLastN(1))
    plain, with_checkpoints = "train, no checkpoints", f"train, async checkpoint every {every} steps"
    reps = max(1, ctx.reps // 2)
    timings.update(interleave([Case(plain, loop(None, plain)),
                               Case(with_checkpoints, loop(loop_manager, with_checkpoints))], reps))
    loop_manager.close()
    # Each repetition ran both loops back to back: pair them, so slow drift cancels out.
    lost = [(w - p) / checkpoints for w, p in zip(timings[with_checkpoints], timings[plain])]
    cpu = [(w - p) / checkpoints for w, p in zip(cpu_seconds[with_checkpoints][-reps:], cpu_seconds[plain][-reps:])]
    rows += [
        Row("steps", plain, timings[plain], note=f"{steps} steps"),
        Row("steps", with_checkpoints, timings[with_checkpoints], ref=plain,
            note=f"{steps} steps, {checkpoints} checkpoints"),
        Row("steps", "lost progress per checkpoint", lost, ref="torch.save + fsync", alt="torch.save",
            note="(with - without) / checkpoints"),
        Row("steps", "process CPU per checkpoint", cpu, ref="torch.save + fsync",
            note="user + system, all threads, (with - without) / checkpoints"),
    ]

    report = Report(NAME, f"checkpoint — {params / 1e6:.1f}M parameters + Adam on {device}, "
                          f"{human_bytes(checkpoint_bytes)} per checkpoint", rows)
    report.compute_ratios()
    pause = report.find("modelkeep async save (pause)")
    report.verdicts = [
        Verdict("async pause / synchronous torch.save", pause.ratio, 0.05),
        Verdict("async pause / torch.save + fsync", pause.ratio_alt, 0.05),
        Verdict("durable save time / disk fsync limit", report.find("modelkeep durable save").ratio, 1.25),
        Verdict("training time with checkpoints / without", report.find(with_checkpoints).ratio, 1.05),
        Verdict("lost progress per checkpoint / torch.save + fsync",
                report.find("lost progress per checkpoint").ratio, 0.25),
    ]
    report.info.update({
        "parameters": params, "device": str(device), "checkpoint_bytes": checkpoint_bytes,
        "steps_per_s_without": round(steps / report.find(plain).median, 3),
        "steps_per_s_with": round(steps / report.find(with_checkpoints).median, 3),
        "lost_progress_per_checkpoint_s": round(report.find("lost progress per checkpoint").median, 3),
        "process_cpu_per_checkpoint_s": round(report.find("process CPU per checkpoint").median, 3),
        "background_write_s": round(async_manager.last_write_s, 3),
    })
    return report
