"""One rule for every verifying reader, and a diff that never trusts recorded hashes alone (issue 10, items 18, 19)."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load, load_weights, read_tensors, save
from modelkeep.artifact.diff import diff_files
from modelkeep.artifact.format import KEY_INTEGRITY, read_header
from modelkeep.artifact.tensors import TensorFile, write_tensors
from modelkeep.errors import IntegrityError


def _without_integrity(path, out):
    header = read_header(path)
    metadata = {k: v for k, v in header.metadata.items() if k != KEY_INTEGRITY}
    return write_tensors(out, {k: v.clone() for k, v in read_tensors(path).items()}, metadata, integrity=False)


@pytest.mark.parametrize("reader", ["load", "load_weights", "read_tensors", "TensorFile"])
def test_every_verifying_reader_refuses_a_file_without_its_integrity_record(saved, trained, tmp_path, reader):
    stripped = _without_integrity(saved, tmp_path / "stripped.safetensors")
    calls = {"load": lambda **kw: load(stripped, **kw),
             "load_weights": lambda **kw: load_weights(trained.model.__class__(trained.model.spec), stripped, **kw),
             "read_tensors": lambda **kw: read_tensors(stripped, **kw),
             "TensorFile": lambda **kw: TensorFile(stripped, **kw)}
    with pytest.raises(IntegrityError, match="records no integrity hashes") as caught:
        calls[reader]()
    message = str(caught.value)
    assert "verify=False" in message and "--no-verify" not in message
    calls[reader](verify=False)  # the documented way around works


def _flip_weight_byte(path):
    header = read_header(path)
    entry = header.tensors["layers.out.weight"] if "layers.out.weight" in header.tensors else next(
        e for n, e in header.tensors.items() if n.endswith("weight"))
    with open(path, "r+b") as handle:
        handle.seek(header.data_start + entry.begin)
        byte = handle.read(1)
        handle.seek(header.data_start + entry.begin)
        handle.write(bytes([byte[0] ^ 0x40]))
    return entry.name


def test_diff_does_not_report_an_edited_tensor_as_equal(trained, tmp_path):
    a = save(trained, tmp_path / "a.safetensors")
    b = save(trained, tmp_path / "b.safetensors")
    assert diff_files(a, b)["identical_tensors"]
    name = _flip_weight_byte(b)  # the integrity record still lists the old hash
    with pytest.raises(IntegrityError, match=f"{name}.*b.safetensors|b.safetensors.*{name}"):
        diff_files(a, b)


def test_diff_reports_values_that_really_differ(trained, tmp_path):
    a = save(trained, tmp_path / "a.safetensors")
    module = trained.model.__class__(trained.model.spec)
    module.load_state_dict(trained.model.state_dict())
    with torch.no_grad():
        next(iter(module.parameters())).add_(1.0)
    b = save(module, tmp_path / "b.safetensors", spec=trained.model.spec)
    report = diff_files(a, b)
    assert len(report["different"]) == 1 and not report["identical_tensors"]
