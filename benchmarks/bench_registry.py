"""registry: storage of ten fine-tunes that share a frozen backbone, and push/pull against copying the file.

The model: a backbone of Dense layers (8 x 1024x1024 float32, 32 MB; ``--quick``: 4 x 128x128) and a 10-way
head. Ten "fine-tunes" keep the backbone's bytes and change only the head, as a fine-tune with a frozen backbone
does; each is saved as an ordinary modelkeep file.

* storage: the ten files side by side against the embedded registry's blob folder after pushing all ten (the
  issue's goal: at most 1.2 x one model plus the ten heads);
* push and pull of one file against ``shutil.copyfile`` + fsync of it (what sharing a file by hand costs). A push
  goes to an empty registry each time (every blob is new); a pull rebuilds the file and checks every digest.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ._harness import Case, Context, Report, Row, interleave, remove

NAME = "registry"
DESCRIPTION = "registry storage of 10 frozen-backbone fine-tunes vs 10 files; push/pull vs copying the file"


def _spec(width: int, depth: int) -> dict:
    layers = [{"kind": "Input", "shape": [width]}]
    layers += [{"kind": "Dense", "name": f"backbone_{i}", "units": width, "activation": "relu"} for i in range(depth)]
    layers.append({"kind": "Dense", "name": "head", "units": 10})
    return {"name": "backbone_and_head", "layers": layers}


def _fine_tunes(folder: Path, width: int, depth: int) -> list[Path]:
    from modelkeep import build, save

    model = build(_spec(width, depth), seed=0)
    paths = []
    for index in range(10):
        with torch.no_grad():
            model.layers["head"].weight.add_(0.01 * (index + 1))   # only the head moves
        paths.append(save(model, folder / f"tune_{index}.safetensors", metrics={"accuracy": 0.9 + index / 100}))
    return paths


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def run(ctx: Context) -> Report:
    from modelkeep.registry import open_registry

    width, depth = (128, 4) if ctx.quick else (1024, 8)
    folder = ctx.subdir(NAME)
    files = _fine_tunes(folder, width, depth)
    registry = open_registry(folder / "registry")
    for path in files:
        registry.push(path, "tune")
    as_files = sum(p.stat().st_size for p in files)
    in_registry = _folder_bytes(folder / "registry" / "blobs")
    head_bytes = (width * 10 + 10) * 4
    goal = 1.2 * files[0].stat().st_size + 10 * head_bytes
    ctx.log(f"10 files {as_files / 1e6:.1f} MB; registry blobs {in_registry / 1e6:.1f} MB; goal {goal / 1e6:.1f} MB")

    source, copied, pulled = files[0], folder / "copied.safetensors", folder / "pulled.safetensors"
    counter = iter(range(10**6))

    def fresh_registry():
        return open_registry(folder / f"fresh_{next(counter)}")

    def drop_registry(state, _result):
        shutil.rmtree(state.root, ignore_errors=True)

    cases = [Case("copy the file (+fsync)", lambda _s: _copy(source, copied), teardown=lambda s, r: remove(copied)),
             Case("registry push (all blobs new)", lambda reg: reg.push(source, "tune"), setup=fresh_registry,
                  teardown=drop_registry),
             Case("registry pull (verified)", lambda _s: registry.pull("tune", pulled),
                  teardown=lambda s, r: remove(pulled))]
    timings = interleave(cases, ctx.reps)
    nbytes = source.stat().st_size
    reference = cases[0].name
    rows = [Row("share one file", case.name, timings[case.name], nbytes, ref=reference if case.name != reference
                else None) for case in cases]
    info = {"one file": f"{nbytes / 1e6:.1f} MB", "10 files": f"{as_files / 1e6:.1f} MB",
            "registry blobs": f"{in_registry / 1e6:.2f} MB ({in_registry / nbytes:.3f} x one file)",
            "goal": f"<= {goal / 1e6:.2f} MB (1.2 x one file + 10 heads): {'met' if in_registry <= goal else 'MISSED'}"}
    report = Report(NAME, "Registry: storage of 10 frozen-backbone fine-tunes; push and pull vs a copy", rows, info=info)
    report.notes.append("the fine-tunes share every backbone tensor's blob; only heads and headers are stored ten times")
    shutil.rmtree(folder, ignore_errors=True)
    return report
