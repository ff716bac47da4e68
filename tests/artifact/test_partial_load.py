"""Partial and lazy loading: some tensors only, weights into an existing module, optimizer state."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load, read_tensors, save
from modelkeep.artifact.format import read_header
from modelkeep.artifact.loading import load_weights
from modelkeep.artifact.tensors import TensorFile
from modelkeep.errors import FormatError, IntegrityError
from modelkeep.nn import build

MLP = {"name": "mlp", "layers": [{"kind": "Input", "name": "x", "shape": [4]},
                                 {"kind": "Dense", "name": "hidden", "units": 8, "activation": "relu"},
                                 {"kind": "Dense", "name": "out", "units": 3}]}


@pytest.fixture()
def saved(tmp_path):
    return save(build(MLP, seed=0), tmp_path / "m.safetensors")


def test_only_the_named_tensors_are_read_and_hashed(saved):
    header = read_header(saved)
    victim = header.tensors["layers.out.weight"]
    raw = bytearray(saved.read_bytes())
    raw[header.data_start + victim.begin] ^= 0xFF  # corrupt a tensor we will not ask for
    saved.write_bytes(bytes(raw))
    tensors = read_tensors(saved, names=["layers.hidden.0.bias"])
    assert list(tensors) == ["layers.hidden.0.bias"]
    with pytest.raises(IntegrityError, match="layers.out.weight"):
        read_tensors(saved, names=["layers.out.weight"])


def test_tensors_are_memory_mapped_not_copied(saved):
    with TensorFile(saved) as handle:
        first = handle.tensor("layers.hidden.0.weight")
        again = handle.tensor("layers.hidden.0.weight")
        assert first.untyped_storage().data_ptr() == again.untyped_storage().data_ptr()
    first.add_(1)  # copy-on-write: the file is untouched
    assert not torch.equal(read_tensors(saved)["layers.hidden.0.weight"], first)


def test_load_weights_reports_missing_unexpected_and_mismatched(saved):
    other = build({**MLP, "layers": MLP["layers"][:2] + [{"kind": "Dense", "name": "out", "units": 5},
                                                           {"kind": "Dense", "name": "extra", "units": 2}]})
    report = load_weights(other, saved)
    assert report.loaded == ["layers.hidden.0.bias", "layers.hidden.0.weight"]
    assert report.missing == ["layers.extra.bias", "layers.extra.weight"]
    assert sorted(m[0] for m in report.mismatched) == ["layers.out.bias", "layers.out.weight"]
    assert ("layers.out.weight", (3, 8), (5, 8)) in report.mismatched
    assert not report.complete and "shape mismatch layers.out.weight" in str(report)
    assert torch.equal(other.state_dict()["layers.hidden.0.weight"], read_tensors(saved)["layers.hidden.0.weight"])
    with pytest.raises(FormatError, match="do not fit"):
        load_weights(other, saved, strict=True)


def test_load_weights_with_prefix_and_unexpected(saved):
    hidden = torch.nn.Linear(4, 8)
    report = load_weights(hidden, saved, prefix="layers.hidden.0.")
    assert report.loaded == ["bias", "weight"] and report.complete
    report = load_weights(torch.nn.Linear(4, 8), saved)
    assert report.missing == ["bias", "weight"] and len(report.unexpected) == 4


def test_optimizer_state_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    model = build(MLP, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def step(m, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for _ in range(3):
        step(model, optimizer)
    path = save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    assert any(name.startswith("__optimizer__/") for name in read_header(path).tensors)
    restored = load(path)
    module = restored.module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    resumed = torch.optim.AdamW(module.parameters(), lr=0.01)
    resumed.load_state_dict(restored.optimizer_state())
    step(model, optimizer)
    module_copy = module  # the memory-mapped weights are copy-on-write, so training them is allowed
    step(module_copy, resumed)
    for a, b in zip(model.parameters(), module_copy.parameters()):
        assert torch.equal(a, b)
