"""registry_concurrency: 8 processes x 50 concurrent pushes to one registry lose nothing; corrupted blobs are refused.

Each of 8 processes pushes 50 distinct small model files (a shared backbone, its own head) as versions of its
own name into ONE embedded registry at the same time (``--quick``: 8 x 5), against the same processes copying the
same files into one shared folder with an fsync each (what a team does by hand, as durably). Then every version is pulled and compared byte for
byte with its file (lost or damaged versions: goal 0). Then ten blobs of ten versions' own heads are damaged by
hand (one byte flipped on disk) and every version pulled again: each version naming a damaged blob must be refused with an
``IntegrityError`` naming the digest, and no pull may hand back bytes that differ from the original (goal 0).
"""
from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import time
from pathlib import Path

from ._harness import Context, Report, Row, Verdict

NAME = "registry_concurrency"
DESCRIPTION = "8 processes x 50 concurrent registry pushes (0 lost) vs copying into a shared folder; corruption"
PROCESSES = 8


def _files(folder: Path, process: int, count: int) -> list[Path]:
    import torch

    from modelkeep.artifact.format import KEY_MANIFEST
    from modelkeep.artifact.tensors import write_tensors

    gen = torch.Generator().manual_seed(0)
    backbone = {f"features.{i}.weight": torch.randn(64, 64, generator=gen) for i in range(4)}
    paths = []
    for index in range(count):
        head = {"head.weight": torch.full((10, 64), float(process * 1000 + index))}
        manifest = '{"metrics": {"accuracy": %f}}' % (index / count)
        paths.append(write_tensors(folder / f"p{process}_{index}.safetensors", {**backbone, **head},
                                   {KEY_MANIFEST: manifest}, durable=False))
    return paths


def _push_all(root: str, process: int, paths: list[Path], start: float) -> list[str]:
    from modelkeep.registry import EmbeddedRegistry

    registry = EmbeddedRegistry(root)
    while time.time() < start:  # every process begins together
        time.sleep(0.001)
    return [registry.push(path, f"model{process}").id for path in paths]


def _copy_all(folder: str, paths: list[Path], start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    for path in paths:
        target = Path(folder) / path.name
        shutil.copyfile(path, target)
        with open(target, "rb+") as handle:  # as durable as a push: the registry fsyncs every blob
            os.fsync(handle.fileno())


def _together(function, jobs: list[tuple]) -> tuple[float, list]:
    start = time.time() + 0.5
    with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
        results = pool.starmap(function, [(*job, start) for job in jobs])
    return time.time() - start, results


def _check(registry, files: list[list[Path]], ids: list[list[str]], out: Path) -> tuple[int, int, int]:
    """(versions pulled intact, refused with IntegrityError, handed back wrong)."""
    from modelkeep.errors import IntegrityError

    intact = refused = wrong = 0
    for process, (paths, versions) in enumerate(zip(files, ids)):
        for path, version in zip(paths, versions):
            try:
                pulled = registry.pull(f"model{process}:{version}", out)
            except IntegrityError:
                refused += 1
                continue
            if pulled.read_bytes() == path.read_bytes():
                intact += 1
            else:
                wrong += 1
    return intact, refused, wrong


def run(ctx: Context) -> Report:
    from modelkeep.io.blobstore import blob_name
    from modelkeep.registry import EmbeddedRegistry, layout

    per_process = 5 if ctx.quick else 50
    folder = ctx.subdir(NAME)
    files = [_files(folder, p, per_process) for p in range(PROCESSES)]
    shared = folder / "shared"
    shared.mkdir()
    copy_seconds, _ = _together(_copy_all, [(str(shared), paths) for paths in files])
    root = folder / "registry"
    EmbeddedRegistry(root)
    push_seconds, ids = _together(_push_all, [(str(root), p, paths) for p, paths in enumerate(files)])
    registry = EmbeddedRegistry(root)
    total = PROCESSES * per_process
    listed = len(registry.list())
    intact, refused, wrong = _check(registry, files, ids, folder / "pulled.safetensors")
    lost = total - listed + (total - intact)

    rng = random.Random(0)
    names = {(p, v): layout.blobs_of(registry.manifest(f"model{p}", v)) for p, vs in enumerate(ids) for v in vs}
    counts: dict[str, int] = {}
    for blobs in names.values():
        for digest in blobs:
            counts[digest] = counts.get(digest, 0) + 1
    damaged = rng.sample(sorted(d for d, n in counts.items() if n == 1), 10)  # each version's own head
    for digest in damaged:
        blob = registry.blobs.committer.path(blob_name(digest))
        blob.chmod(0o644)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    expected = sum(1 for blobs in names.values() if blobs & set(damaged))
    intact_after, refused_after, wrong_after = _check(registry, files, ids, folder / "pulled.safetensors")

    rows = [Row("concurrent sharing", f"{PROCESSES} x {per_process} copies into a shared folder", [copy_seconds]),
            Row("concurrent sharing", f"{PROCESSES} x {per_process} registry pushes", [push_seconds],
                ref=f"{PROCESSES} x {per_process} copies into a shared folder")]
    info = {"pushes": total, "versions listed": listed, "pulled intact": intact, "pushes/s": f"{total / push_seconds:.0f}",
            "damaged blobs": len(damaged), "versions naming one": expected, "refused after damage": refused_after,
            "intact after damage": intact_after,
            "handed back wrong": wrong_after}
    verdicts = [Verdict("versions lost or damaged by concurrent pushes", lost + refused + wrong, 0),
                Verdict("damaged versions not refused", expected - refused_after, 0),
                Verdict("pulls that returned wrong bytes", wrong_after, 0),
                Verdict("undamaged versions that failed to pull", total - expected - intact_after, 0)]
    report = Report(NAME, "Registry: 8 concurrent writers, then blobs damaged by hand", rows, verdicts=verdicts,
                    info=info)
    report.notes.append("one SQLite write transaction per push serialises the index; blobs are written in parallel")
    shutil.rmtree(folder, ignore_errors=True)
    return report
