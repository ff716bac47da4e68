"""Sharded checkpoints hold torch's wider unsigned integers (uint16, uint32, uint64) bit for bit.

NumPy's random state is 624 uint32 words; before these dtypes were in the manifest a sharded checkpoint
refused it and fit had to smuggle it through as int32.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelkeep.checkpoint.sharded import load_sharded, read_sharded, save_sharded

SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as the signed integer of the same width (few kernels exist for uint32/uint64)."""
    return tensor.view(SIGNED.get(tensor.dtype, tensor.dtype))


def _unsigned_state() -> dict[str, torch.Tensor]:
    numpy_state = np.random.RandomState(7).get_state()[1]  # (624,) uint32, many words above 2**31
    return {
        "numpy": torch.from_numpy(numpy_state.copy()),
        "u16": torch.tensor([0, 1, 2**15, 2**16 - 1], dtype=torch.int64).to(torch.uint16),
        "u32": torch.tensor([0, 2**31, 2**32 - 1], dtype=torch.int64).to(torch.uint32),
        "u64": torch.tensor([0, -1, -(2**63)], dtype=torch.int64).view(torch.uint64),  # 0, 2**64-1, 2**63
        "matrix": torch.arange(12, dtype=torch.int32).reshape(3, 4).to(torch.uint32),
    }


@pytest.mark.parametrize("reader", ["load_sharded", "read_sharded"])
def test_unsigned_integer_tensors_round_trip_bit_for_bit(tmp_path, reader):
    saved = _unsigned_state()
    assert saved["numpy"].dtype == torch.uint32
    folder = save_sharded(tmp_path, 1, {"rng": saved}, {"note": "unsigned"})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {manifest["tensors"][f"rng.{name}"]["dtype"] for name in saved} == {"uint16", "uint32", "uint64"}
    if reader == "load_sharded":
        target = {"rng": {name: torch.zeros(t.shape, dtype=t.dtype) for name, t in saved.items()}}
        assert load_sharded(folder, target) == {"note": "unsigned"}
        restored = target["rng"]
    else:
        _, flat = read_sharded(folder)
        restored = {key.removeprefix("rng."): tensor for key, tensor in flat.items()}
    for name, tensor in saved.items():
        assert restored[name].dtype == tensor.dtype and restored[name].shape == tensor.shape
        assert torch.equal(_bits(restored[name]), _bits(tensor)), name
    assert np.array_equal(restored["numpy"].numpy(), np.random.RandomState(7).get_state()[1])


def test_a_manifest_with_unsigned_tensors_validates_against_the_schema(tmp_path):
    import jsonschema

    import modelkeep.checkpoint

    schema = json.loads((Path(modelkeep.checkpoint.__file__).parent / "sharded_manifest.schema.json").read_text())
    folder = save_sharded(tmp_path, 1, _unsigned_state(), {})
    jsonschema.validate(json.loads((folder / "manifest.json").read_text()), schema)
