"""save_load: modelkeep write_tensors/read_tensors against torch.save/load and safetensors.

A GPT-2-small-shaped float32 state dict (124.4M parameters in 148 tensors;
``--quick``: the same 148 tensors at width 256 and a 10k vocabulary, 12.1M
parameters), random but seeded, is

* saved without durability (data left in the page cache),
* saved durably (data on disk: fsync of the file; modelkeep also fsyncs the folder),
* loaded and touched, twice over (``--touch page|full`` picks one): reading one
  element of every 4 KiB page of every tensor ("page": what a lazy memory map
  costs to bring in), and summing every element ("full": what using every weight
  once costs). The touch is the same for every loader, so lazy memory maps pay
  for their page faults.

Every group also has a "limit" row: the same bytes written with plain
``os.write`` (plus ``fsync`` in the durable group), which is as fast as any
writer can go on this machine.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import torch

from ._harness import (Case, Context, Report, Row, Verdict, evict, fsync_path, human_bytes, interleave, remove,
                       start_writeback, writeback_supported)

NAME = "save_load"
DESCRIPTION = "save (plain and durable) and load+touch of a GPT-2-small state dict: modelkeep vs torch vs safetensors"

SEED = 1234
TOUCH_LABEL = {"page": "one element per 4 KiB page", "full": "sum of every element"}
LOAD_SUFFIX = {"page": "", "full": " /full"}


@dataclasses.dataclass(frozen=True)
class GPTShape:
    vocab: int
    context: int
    width: int
    layers: int


FULL = GPTShape(vocab=50257, context=1024, width=768, layers=12)
QUICK = GPTShape(vocab=10000, context=512, width=256, layers=12)


def gpt2_shapes(shape: GPTShape) -> dict[str, tuple[int, ...]]:
    d = shape.width
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (shape.vocab, d),
        "wpe.weight": (shape.context, d),
    }
    for i in range(shape.layers):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
        })
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    return shapes


def make_state_dict(shape: GPTShape, seed: int = SEED) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(dims, generator=generator) * 0.02 for name, dims in gpt2_shapes(shape).items()}


def make_touch(mode: str) -> Callable[[dict[str, torch.Tensor]], float]:
    def touch(tensors: dict[str, torch.Tensor]) -> float:
        total = 0.0
        for name in sorted(tensors):
            flat = tensors[name].reshape(-1)
            if mode == "page":
                flat = flat[:: max(1, 4096 // flat.element_size())]
            total += float(flat.sum())
        return total
    return touch


# --------------------------------------------------------------------------- the writers


WRITEBACK_STEP = 32 << 20


def raw_write(path: Path, tensors: dict[str, torch.Tensor], durable: bool, early_writeback: bool = False) -> None:
    """The same payload bytes with plain os.write (+ fsync): the floor for a simple writer.

    ``early_writeback`` starts the disk write every 32 MiB (Linux sync_file_range) so the
    final fsync only waits for the tail: the floor for a writer that overlaps the two.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = flushed = 0
        for tensor in tensors.values():
            view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            while view:
                written = os.write(fd, view[:WRITEBACK_STEP] if early_writeback else view)
                view = view[written:]
                offset += written
                if early_writeback and offset - flushed >= WRITEBACK_STEP:
                    start_writeback(fd, flushed, offset - flushed)
                    flushed = offset
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def run(ctx: Context) -> Report:
    from safetensors.torch import load_file, save_file

    from modelkeep.artifact.tensors import read_tensors, write_tensors

    shape = QUICK if ctx.quick else FULL
    ctx.log(f"building state dict {shape} (seed {SEED})")
    sd = make_state_dict(shape)
    params = sum(t.numel() for t in sd.values())
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    folder = ctx.subdir(NAME)

    def path_for(tag: str) -> Path:
        return folder / f"{tag}.bin"

    def save_case(name: str, tag: str, save: Callable[[Path], Any], *, durable: bool) -> Case:
        target = path_for(tag)

        def setup() -> Path:
            remove(target)
            return target

        def timed(path: Path) -> None:
            save(path)

        def teardown(path: Path, _result: Any) -> None:
            if not durable:
                fsync_path(path)  # untimed: do not let this run's write-back slow the next case
            remove(path)

        return Case(name, timed, setup, teardown)

    def torch_save(path: Path, durable: bool) -> None:
        torch.save(sd, path)
        if durable:
            fsync_path(path)

    def st_save(path: Path, durable: bool) -> None:
        save_file(sd, str(path))
        if durable:
            fsync_path(path)

    # ---- save, not durable
    plain = [
        save_case("modelkeep write_tensors", "mk", lambda p: write_tensors(p, sd, durable=False), durable=False),
        save_case("torch.save", "pt", lambda p: torch_save(p, False), durable=False),
        save_case("safetensors save_file", "st", lambda p: st_save(p, False), durable=False),
        save_case("limit: os.write (page cache)", "raw", lambda p: raw_write(p, sd, False), durable=False),
    ]
    ctx.log(f"save, not durable: {len(plain)} cases × {ctx.reps} reps (+1 warm-up)")
    t_plain = interleave(plain, ctx.reps)

    # ---- save, durable
    durable = [
        save_case("modelkeep write_tensors durable", "mk", lambda p: write_tensors(p, sd, durable=True), durable=True),
        save_case("torch.save + fsync", "pt", lambda p: torch_save(p, True), durable=True),
        save_case("safetensors save_file + fsync", "st", lambda p: st_save(p, True), durable=True),
        save_case("limit: os.write + fsync (disk)", "raw", lambda p: raw_write(p, sd, True), durable=True),
    ]
    if writeback_supported():
        durable.append(save_case("limit: os.write + early write-back + fsync", "raw-wb",
                                 lambda p: raw_write(p, sd, True, early_writeback=True), durable=True))
    ctx.log(f"save, durable: {len(durable)} cases × {ctx.reps} reps (+1 warm-up)")
    t_durable = interleave(durable, ctx.reps)

    # ---- load + touch
    files = {"mk": path_for("load-mk"), "pt": path_for("load-pt"), "st": path_for("load-st")}
    write_tensors(files["mk"], sd, durable=True)
    torch_save(files["pt"], True)
    st_save(files["st"], True)
    sizes = {tag: path.stat().st_size for tag, path in files.items()}

    touch_modes = [ctx.options["touch"]] if ctx.options.get("touch") else ["page", "full"]
    threads = torch.get_num_threads()
    # One intra-op thread for the touch: a 2-thread sum stalls badly when another process holds a core.
    torch.set_num_threads(1)
    expected = {mode: make_touch(mode)(sd) for mode in touch_modes}
    # Loaders return the same bits, but float32 sums may round differently with a tensor's alignment.
    tolerance = {mode: 1e-5 * make_touch(mode)({k: t.abs() for k, t in sd.items()}) for mode in touch_modes}
    del sd  # loads should not compete with the source dict for memory

    def load_case(name: str, tag: str, load: Callable[[Path], dict[str, torch.Tensor]], mode: str) -> Case:
        target = files[tag]
        touch = make_touch(mode)

        def setup() -> Path:
            if ctx.cold:
                evict(target)
            return target

        def timed(path: Path) -> float:
            return touch(load(path))

        def teardown(_path: Path, result: float) -> None:
            want = expected[mode]
            if abs(result - want) > tolerance[mode]:
                raise AssertionError(f"{name}: touched sum {result!r} differs from the saved {want!r}")

        return Case(name + LOAD_SUFFIX[mode], timed, setup, teardown)

    t_load: dict[str, dict[str, list[float]]] = {}
    try:
        for mode in touch_modes:
            loads = [
                load_case("modelkeep read_tensors (verify)", "mk", lambda p: read_tensors(p), mode),
                load_case("modelkeep read_tensors verify=False", "mk", lambda p: read_tensors(p, verify=False), mode),
                load_case("torch.load weights_only", "pt", lambda p: torch.load(p, weights_only=True), mode),
                load_case("torch.load weights_only mmap", "pt",
                          lambda p: torch.load(p, weights_only=True, mmap=True), mode),
                load_case("safetensors load_file", "st", lambda p: load_file(str(p)), mode),
            ]
            ctx.log(f"load + touch ({TOUCH_LABEL[mode]}): {len(loads)} cases × {ctx.reps} reps (+1 warm-up)")
            t_load[mode] = interleave(loads, ctx.reps)
    finally:
        torch.set_num_threads(threads)
    for path in files.values():
        remove(path)

    # ---- report
    rows: list[Row] = []
    for name, samples in t_plain.items():
        rows.append(Row("save", name, samples, nbytes, ref="safetensors save_file", alt="torch.save"))
    for name, samples in t_durable.items():
        rows.append(Row("save durable", name, samples, nbytes,
                        ref="safetensors save_file + fsync", alt="torch.save + fsync"))
    for mode, timings in t_load.items():
        for name, samples in timings.items():
            rows.append(Row(f"load+{mode} touch", name, samples, nbytes,
                            ref="safetensors load_file" + LOAD_SUFFIX[mode],
                            alt="torch.load weights_only" + LOAD_SUFFIX[mode]))
    report = Report(NAME, f"save_load — {params / 1e6:.1f}M float32 params in {len(gpt2_shapes(shape))} tensors "
                          f"({human_bytes(nbytes)}), median of {ctx.reps} interleaved reps", rows)
    report.compute_ratios()

    def ratio(case: str) -> float:
        return report.find(case).ratio  # type: ignore[return-value]

    report.verdicts = []
    for mode in touch_modes:
        suffix = LOAD_SUFFIX[mode]
        report.verdicts += [
            Verdict(f"load+verify ≤ 1.5× safetensors ({TOUCH_LABEL[mode]})",
                    ratio("modelkeep read_tensors (verify)" + suffix), 1.5),
            Verdict(f"load no-verify ≤ 1.0× safetensors ({TOUCH_LABEL[mode]})",
                    ratio("modelkeep read_tensors verify=False" + suffix), 1.0),
        ]
    report.verdicts.append(
        Verdict("durable save ≤ 1.0× safetensors+fsync", ratio("modelkeep write_tensors durable"), 1.0,
                "disk limits: " + ", ".join(f"{row.case.removeprefix('limit: ')} {row.ratio:.2f}×"
                                            for row in rows if row.group == "save durable"
                                            and row.case.startswith("limit:"))))
    report.info = {
        "model": f"GPT-2 shape {dataclasses.asdict(shape)}, seed {SEED}",
        "params": params,
        "payload_bytes": nbytes,
        "file_bytes": {"modelkeep": sizes["mk"], "torch": sizes["pt"], "safetensors": sizes["st"]},
        "touch": ", ".join(f"{mode} = {TOUCH_LABEL[mode]}" for mode in touch_modes),
        "page_cache": "cold (posix_fadvise DONTNEED before each load)" if ctx.cold else "warm (files just written)",
    }
    report.notes = [
        "GB/s = tensor payload bytes / median seconds. ratio = median / median of the 'vs' case (<1 is faster).",
        "spread = (max-min)/median over the repetitions; a large spread means the ratio is noisy.",
        "durable: torch/safetensors fsync the file only; modelkeep also fsyncs the folder (rename).",
        "safetensors load_file (mmap backend), torch.load mmap=True and modelkeep read_tensors are all lazy "
        "memory maps: the page touch is where they pay their page faults; verify=True reads every byte.",
        "touch runs with torch.set_num_threads(1).",
    ]
    return report
