"""registry_remote: push and pull through the S3 and OCI backends against moving the file by the same transport.

Both servers are the real ones the tests use, started on loopback (Ceph radosgw for S3, the `distribution`
registry for OCI; tests/registry/servers.py); a backend whose server is not installed is left out. The file: a
modelkeep model of Dense layers (8 x 1024x1024 float32, 32 MB; ``--quick``: 4 x 256x256, 1 MB).

* S3: ``modelkeep push`` (every blob new: a fresh prefix each time) and a verified ``pull``, against
  ``s3fs.put_file`` / ``get_file`` of the whole file (what sharing it by hand on S3 costs);
* OCI: the same, against ``oras`` pushing and pulling the file as one layer (what ``oras push`` does).
"""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from ._harness import Case, Context, Report, Row, interleave, remove

NAME = "registry_remote"
DESCRIPTION = "registry push/pull on real S3 (radosgw) and OCI (distribution) servers vs moving the file itself"
_SERVERS = Path(__file__).resolve().parent.parent / "tests" / "registry"


@contextlib.contextmanager
def _server(start: str, base: Path) -> Iterator[Any]:
    """A loopback server from the tests' helpers, or None when its binaries are missing."""
    sys.path.insert(0, str(_SERVERS))
    try:
        import pytest
        import servers
    finally:
        sys.path.remove(str(_SERVERS))
    try:
        with contextlib.contextmanager(getattr(servers, start))(base) as server:
            yield server
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:  # noqa: B025 - missing binaries: leave it out
        print(f"  {start}: not run ({exc})")
        yield None


def _model(folder: Path, width: int, depth: int) -> Path:
    from modelkeep import build, save

    layers = [{"kind": "Input", "shape": [width]}]
    layers += [{"kind": "Dense", "units": width, "activation": "relu"} for _ in range(depth)]
    return save(build({"name": "dense_stack", "layers": layers}, seed=0), folder / "model.safetensors")


def _cases(label: str, fresh: Callable[[], Any], source: Path, pulled: Path, copy_push: Callable[[], Any],
           copy_pull: Callable[[], Any], pull_from: Any) -> list[Case]:
    return [Case(f"{label}: copy the file up", lambda _s: copy_push()),
            Case(f"{label}: registry push (all blobs new)", lambda reg: reg.push(source, "bench"), setup=fresh),
            Case(f"{label}: copy the file down", lambda _s: copy_pull(), teardown=lambda s, r: remove(pulled)),
            Case(f"{label}: registry pull (verified)", lambda _s: pull_from.pull("bench", pulled),
                 teardown=lambda s, r: remove(pulled))]


def _s3_cases(server: Any, source: Path, pulled: Path) -> list[Case]:
    from modelkeep.registry.objectstore import ObjectStoreRegistry

    fs = server.filesystem()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    options = server.storage_options()

    def fresh():
        return ObjectStoreRegistry(f"s3://{bucket}/{uuid.uuid4().hex[:8]}", storage_options=options)

    standing = fresh()
    standing.push(source, "bench")
    return _cases("S3", fresh, source, pulled, lambda: fs.put_file(str(source), f"{bucket}/plain/model.safetensors"),
                  lambda: fs.get_file(f"{bucket}/plain/model.safetensors", str(pulled)), standing)


def _oci_cases(server: Any, source: Path, pulled: Path) -> list[Case]:
    from modelkeep.registry.oci import OciRegistry

    client = server.client()
    target = f"{server.host}/bench/plain:v1"

    def fresh():
        return OciRegistry(f"oci://{server.host}/bench{uuid.uuid4().hex[:8]}")

    def oras_push():
        cwd = os.getcwd()
        os.chdir(source.parent)  # oras refuses absolute paths
        try:
            client.push(target=target, files=[source.name], quiet=True)
        finally:
            os.chdir(cwd)

    standing = fresh()
    standing.push(source, "bench")
    return _cases("OCI", fresh, source, pulled, oras_push,
                  lambda: client.pull(target=target, outdir=str(pulled.parent / "oras")), standing)


def run(ctx: Context) -> Report:
    width, depth = (256, 4) if ctx.quick else (1024, 8)
    folder = ctx.subdir(NAME)
    source = _model(folder, width, depth)
    pulled = folder / "pulled.safetensors"
    rows: list[Row] = []
    info = {"file": f"{source.stat().st_size / 1e6:.1f} MB"}
    for label, start, make in (("S3", "_start_radosgw", _s3_cases), ("OCI", "_start_oci", _oci_cases)):
        with _server(start, folder / label.lower()) as server:
            if server is None:
                info[label] = "not run: its server is not installed"
                continue
            cases = make(server, source, pulled)
            timings = interleave(cases, ctx.reps)
            nbytes = source.stat().st_size
            for up, case in zip((None, cases[0].name, None, cases[2].name), cases):
                rows.append(Row(f"{label} share one file", case.name, timings[case.name], nbytes, ref=up))
    report = Report(NAME, "Registry on real S3 and OCI servers: push and pull vs moving the file", rows, info=info)
    report.notes.append("a push sends one blob per tensor plus a manifest and a record; the plain copies send one "
                        "object, so their ratio is the price of per-tensor dedupe and verification")
    return report
