"""Inspecting a model file and opening one tensor lazily, on a GPT-2-small-sized file.

What a user waits for when they ``modelkeep inspect`` a big file (header only,
no torch), when they ``--verify`` it (every hash, still no torch), and when
they need one tensor out of it (memory map + that tensor's hash only),
compared with what safetensors itself offers for the same file.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ._harness import Case, Context, Report, Row, Verdict, human_bytes, interleave, remove
from .bench_save_load import FULL, QUICK, SEED, gpt2_shapes, make_state_dict

NAME = "inspect"
DESCRIPTION = "inspect (header only, no torch), inspect --verify, and lazy open of one tensor, on a GPT-2-small file"
ONE_TENSOR = "h.0.attn.c_attn.weight"


def _write_model_file(path: Path, tensors: dict) -> None:
    from modelkeep.artifact.format import FORMAT_VERSION, KEY_MANIFEST, KEY_VERSION
    from modelkeep.artifact.tensors import write_tensors

    manifest = {"format_version": FORMAT_VERSION,
                "architecture": {"type": "class", "class": "benchmarks.gpt:GPT2", "init": {"layers": 12}},
                "task": "classification", "card": {"license": "MIT"}}
    write_tensors(path, tensors, {"format": "pt", KEY_VERSION: str(FORMAT_VERSION), KEY_MANIFEST: json.dumps(manifest)})


def run(ctx: Context) -> Report:
    from safetensors import safe_open

    from modelkeep.artifact.inspection import describe
    from modelkeep.artifact.tensors import TensorFile

    shape = QUICK if ctx.quick else FULL
    tensors = make_state_dict(shape)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    path = ctx.subdir(NAME) / "gpt2.safetensors"
    _write_model_file(path, tensors)
    del tensors

    def case(name: str, fn) -> Case:
        return Case(name, lambda _state: fn())

    def one_tensor_modelkeep() -> float:
        with TensorFile(path, verify=True) as handle:
            return float(handle.tensor(ONE_TENSOR).sum())

    def one_tensor_safetensors() -> float:
        with safe_open(str(path), framework="pt") as handle:
            return float(handle.get_tensor(ONE_TENSOR).sum())

    def metadata_safetensors() -> dict:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata()

    header_cases = [
        case("modelkeep inspect (describe)", lambda: describe(path)),
        case("safetensors safe_open + metadata()", metadata_safetensors),
    ]
    ctx.log(f"inspect: {len(header_cases)} cases × {ctx.reps} reps")
    t_header = interleave(header_cases, ctx.reps)
    tensor_cases = [
        case("modelkeep TensorFile.tensor (verify that tensor)", one_tensor_modelkeep),
        case("safetensors safe_open.get_tensor", one_tensor_safetensors),
    ]
    t_tensor = interleave(tensor_cases, ctx.reps)
    verify_cases = [case("modelkeep inspect --verify (every hash)", lambda: describe(path, verify=True))]
    t_verify = interleave(verify_cases, ctx.reps)
    command = [sys.executable, "-c",
               "import sys; from modelkeep.cli.main import main; import io, contextlib\n"
               "with contextlib.redirect_stdout(io.StringIO()): main(['inspect', sys.argv[1], '--json'])\n"
               "assert 'torch' not in sys.modules", str(path)]
    cli_cases = [case("modelkeep inspect --json (new process)",
                      lambda: subprocess.run(command, check=True, capture_output=True))]
    t_cli = interleave(cli_cases, max(1, ctx.reps // 2))
    remove(path)

    one_bytes = 3 * shape.width * shape.width * 4
    rows = [Row("inspect (header)", n, s, ref="safetensors safe_open + metadata()") for n, s in t_header.items()]
    rows += [Row("one tensor, lazy", n, s, one_bytes, ref="safetensors safe_open.get_tensor") for n, s in t_tensor.items()]
    rows += [Row("verify", n, s, nbytes) for n, s in t_verify.items()]
    rows += [Row("cli", n, s, note="interpreter start-up included; torch never imported") for n, s in t_cli.items()]
    report = Report(NAME, f"inspect — GPT-2-shaped file ({human_bytes(nbytes)}, {len(gpt2_shapes(shape))} tensors), "
                          f"median of {ctx.reps} reps", rows)
    report.compute_ratios()
    report.verdicts = [
        Verdict("one tensor (hash checked) ≤ 2.5× safetensors get_tensor",
                report.find("modelkeep TensorFile.tensor (verify that tensor)").ratio, 2.5),
    ]
    report.info = {"model": f"GPT-2 shape {shape}, seed {SEED}", "payload_bytes": nbytes, "one_tensor": ONE_TENSOR,
                   "inspect_ms": round(report.find("modelkeep inspect (describe)").median * 1000, 2)}
    report.notes = [
        "inspect reads the header and metadata only; --verify hashes every tensor (xxh3-128) through a read-only map.",
        "one tensor: modelkeep maps the file and hashes just that tensor; safetensors copies it out of its map.",
    ]
    return report
