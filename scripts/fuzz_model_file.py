"""Fuzz the model-file reader: mutate valid files at random and check every outcome is a model or a typed error.

    python scripts/fuzz_model_file.py --seconds 600            # the long run
    python scripts/fuzz_model_file.py --cases 200 --seed 1     # a fixed number of cases

Each case mutates one of a few small valid files (byte flips, truncation,
insertion, a rewritten length prefix, or a structure-aware edit of the header or
manifest JSON whose integrity hashes are then recomputed so the edit reaches
the parsers behind the hash check) and runs ``load`` (verifying and not),
``describe`` (``inspect``), ``describe(verify=True)`` and, for small cases,
the JSON export on it. Anything other than success or a ``ModelkeepError``
subclass is a failure; so is a case slower than ``--slow`` seconds. Failing
inputs are saved to ``--out`` for replay. ``tests/test_fuzz.py`` drives the
same ``mutate`` with hypothesis for a short run in CI.
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seeds() -> list[bytes]:
    """Small valid files: a spec MLP with labels and preprocessing, and one with optimizer state."""
    import numpy as np
    import torch

    from modelkeep.artifact import save
    from modelkeep.data import Standardize
    from modelkeep.nn import build

    spec = {"name": "fuzz_mlp", "layers": [
        {"kind": "Input", "name": "x", "shape": [4]},
        {"kind": "Dense", "name": "hidden", "units": 5, "activation": "relu"},
        {"kind": "Dropout", "name": "drop", "rate": 0.1},
        {"kind": "Dense", "name": "out", "units": 3, "activation": "softmax"}]}
    files = []
    with tempfile.TemporaryDirectory() as folder:
        model = build(spec, seed=0)
        scaler = Standardize().fit(np.random.default_rng(0).normal(size=(20, 4)).astype("float32"))
        path = save(model, Path(folder) / "a.safetensors", labels=["a", "b", "c"], preprocessing=scaler,
                    history={"epoch": [1, 2], "loss": [1.0, 0.5]}, card={"license": "MIT"}, durable=False)
        files.append(path.read_bytes())
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        path = save(model, Path(folder) / "b.safetensors", optimizer=optimizer, durable=False)
        files.append(path.read_bytes())
    return files


def _split(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    try:
        (length,) = struct.unpack("<Q", raw[:8])
        return json.loads(raw[8:8 + length]), raw[8 + length:]
    except Exception:  # noqa: BLE001 - the seed may already be mutated beyond parsing
        return None


def _rehash(header: dict[str, Any], data: bytes) -> None:
    from modelkeep.artifact.integrity import hash_bytes, layout_digest

    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return
    metadata.pop("modelkeep.integrity", None)
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    digests = {}
    layout = []
    for name, info in tensors.items():
        try:
            begin, end = (int(o) for o in info["data_offsets"])
            digests[name] = hash_bytes(data[max(begin, 0):max(end, 0)])
            layout.append((name, str(info["dtype"]), tuple(info["shape"])))
        except Exception:  # noqa: BLE001
            digests[name] = "0" * 32
    try:
        layout_hash = layout_digest(layout)
    except Exception:  # noqa: BLE001
        layout_hash = "0" * 32
    metadata["modelkeep.integrity"] = json.dumps({
        "algorithm": "xxh3-128", "layout": layout_hash,
        "metadata": {k: hash_bytes(v.encode("utf-8", "surrogatepass")) for k, v in sorted(metadata.items())},
        "tensors": digests}, separators=(",", ":"))


INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 8, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63),
                    10**30]
INTERESTING_VALUES: list[Any] = [None, True, False, "", "x", "F32", "BOOL", "spec", "class", "os:system", [], {},
                                 [None], 1.5, -0.0, 1e308, "NaN", [[[[]]]], {"type": "spec"}]


def _mutate_json(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """Return ``value`` with one random leaf or container changed."""
    if isinstance(value, dict) and value and depth < 12 and rng.random() < 0.85:
        key = rng.choice(list(value))
        choice = rng.random()
        if choice < 0.08:
            value.pop(key)
        elif choice < 0.14:
            value[key + rng.choice(["_", "x", ""])] = rng.choice(INTERESTING_VALUES)
        else:
            value[key] = _mutate_json(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and depth < 12 and rng.random() < 0.85:
        index = rng.randrange(len(value))
        choice = rng.random()
        if choice < 0.1:
            value.pop(index)
        elif choice < 0.2:
            value.insert(index, value[index])
        else:
            value[index] = _mutate_json(value[index], rng, depth + 1)
        return value
    if isinstance(value, str) and value[:1] in "{[" and rng.random() < 0.7:
        try:
            inner = json.loads(value)
        except ValueError:
            inner = None
        if inner is not None:
            return json.dumps(_mutate_json(inner, rng, depth + 1), separators=(",", ":"))
    if isinstance(value, bool) or value is None:
        return rng.choice(INTERESTING_VALUES)
    if isinstance(value, int):
        return rng.choice([value + rng.choice([-1, 1]), rng.choice(INTERESTING_INTS), -value, value * 2])
    if isinstance(value, float):
        return rng.choice([0.0, -value, value * 1e10, 1e308, -1e-308, 2.0**53])
    if isinstance(value, str):
        return rng.choice([value[:-1], value + "x", "", value.upper(), rng.choice(INTERESTING_VALUES)])
    return rng.choice(INTERESTING_VALUES)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One random mutation of ``raw`` (a valid file)."""
    kind = rng.randrange(8)
    data = bytearray(raw)
    if len(data) < 16:
        return bytes(data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))))
    if kind == 0:  # flip a few bits anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:  # flip bits in the header
        (length,) = struct.unpack("<Q", raw[:8])
        for _ in range(rng.randint(1, 4)):
            data[8 + rng.randrange(max(1, min(length, len(raw) - 8)))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:  # truncate
        return bytes(data[:rng.randrange(len(data))])
    if kind == 3:  # insert or delete bytes
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            return bytes(data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[at:])
        return bytes(data[:at] + data[at + rng.randint(1, 16):])
    if kind == 4:  # lie about the header length
        (length,) = struct.unpack("<Q", raw[:8])
        new = rng.choice([length + rng.randint(-16, 16), rng.choice(INTERESTING_INTS) % 2**64, len(raw), 0])
        return struct.pack("<Q", max(new, 0) % 2**64) + raw[8:]
    parsed = _split(raw)
    if parsed is None:
        return bytes(data)
    header, payload = parsed
    header = _mutate_json(header, rng)
    if kind >= 6 and isinstance(header, dict):  # make the edit pass the integrity check
        _rehash(header, payload)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text + payload


def check(path: Path) -> str:
    """Run every reader on ``path``; raise on anything but success or a typed error.

    Returns what ``load(path)`` did: "loaded" or the name of the typed error.
    """
    from modelkeep.artifact import load
    from modelkeep.artifact.inspection import describe
    from modelkeep.errors import ModelkeepError

    attempts = [
        lambda: load(path),
        lambda: load(path, verify=False),
        lambda: describe(path),
        lambda: describe(path, verify=True),
    ]
    outcome = ""
    for attempt in attempts:
        try:
            result = attempt()
            if hasattr(result, "predict"):
                _exercise(result)
            outcome = outcome or "loaded"
        except ModelkeepError as exc:
            outcome = outcome or type(exc).__name__
    return outcome


def _exercise(model: Any) -> None:
    """A loaded model must also be usable, or fail with a typed error."""
    import numpy as np

    from modelkeep.errors import ModelkeepError

    try:
        model.predict(np.zeros((2, 4), dtype=np.float32))
        model.optimizer_state()
    except ModelkeepError:
        pass


def run(cases: int | None, seconds: float | None, seed: int, slow: float, out: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    base = seeds()
    failures: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    tried = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.safetensors"
        while True:
            if cases is not None and tried >= cases:
                break
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            raw = mutate(rng.choice(base), rng)
            if rng.random() < 0.2:
                raw = mutate(raw, rng)  # sometimes two mutations
            path.write_bytes(raw)
            began = time.perf_counter()
            try:
                outcomes[check(path)] += 1
                problem = None
            except Exception as exc:  # noqa: BLE001 - that is what we are looking for
                problem = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
            elapsed = time.perf_counter() - began
            slowest = max(slowest, elapsed)
            if problem is None and elapsed > slow:
                problem = f"slow: {elapsed:.2f}s"
            if problem is not None:
                out.mkdir(parents=True, exist_ok=True)
                saved = out / f"failure_{len(failures):04d}.safetensors"
                saved.write_bytes(raw)
                failures.append({"file": str(saved), "problem": problem})
            tried += 1
    return {"cases": tried, "seconds": round(time.monotonic() - start, 1), "failures": failures,
            "slowest_case_s": round(slowest, 3), "seed": seed, "load_outcomes": dict(outcomes.most_common())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="run for this long (default 60 s)")
    parser.add_argument("--cases", type=int, default=None, help="run this many cases instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", type=float, default=1.0, help="a case slower than this (s) is a failure")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None or args.cases is not None else 60.0
    report = run(args.cases, seconds, args.seed, args.slow, args.out)
    print(json.dumps({**report, "failures": report["failures"][:20]}, indent=1))
    print(f"{report['cases']:,} cases in {report['seconds']} s, {len(report['failures'])} failures")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
