"""Files written by format version 1 stay loadable and keep predicting what they predicted when written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelkeep.artifact import load
from modelkeep.artifact.inspection import describe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = FIXTURES / "format_v1"
CASES = sorted(V1.glob("*.expected.json"))


@pytest.fixture(scope="module")
def tinynet():
    sys.path.insert(0, str(FIXTURES))
    try:
        from fixture_models import TinyNet

        yield TinyNet
    finally:
        sys.path.remove(str(FIXTURES))


def test_fixtures_exist_and_are_small():
    files = sorted(V1.glob("*.safetensors"))
    assert len(files) >= 3 and len(CASES) == len(files)
    assert all(f.stat().st_size < 200 * 1024 for f in files)


@pytest.mark.parametrize("expected_file", CASES, ids=lambda p: p.name.split(".")[0])
def test_v1_files_load_and_predict_as_recorded(expected_file, tinynet):
    expected = json.loads(expected_file.read_text())
    path = V1 / expected["file"]
    user_class = describe(path)["architecture"]["type"] == "class"
    model = load(path, model_class=tinynet if user_class else None)
    prediction = model.predict(np.array(expected["inputs"], dtype=np.float32))
    assert prediction.labels == expected["labels"]
    np.testing.assert_allclose(prediction.probabilities, expected["probabilities"], rtol=1e-4, atol=1e-6)


def test_v1_files_verify_and_describe_without_torch_code():
    for path in sorted(V1.glob("*.safetensors")):
        info = describe(path, verify=True)
        assert info["integrity"]["verified"] and info["format_version"] == 1
        assert info["card"]["license"] == "CC0-1.0"
        assert info["provenance"]["modelkeep_version"]
        assert info["signature"]["inputs"][0]["shape"][0] is None


def test_v1_optimizer_and_scheduler_state_restore():
    model = load(V1 / "iris_mlp.safetensors")
    module = model.module
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    optimizer.load_state_dict(model.optimizer_state())
    assert optimizer.state_dict()["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.5 ** 3)
    assert all(float(s["step"]) > 0 for s in optimizer.state.values())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    scheduler.load_state_dict(model.scheduler_state())
    assert scheduler.last_epoch == 30


def test_v1_lineage_points_at_the_parent_content_hash():
    parent = load(V1 / "iris_mlp.safetensors")
    child = load(V1 / "digits_mlp.safetensors")
    assert child.lineage["parent"]["content_hash"] == parent.content_hash


def test_v1_user_class_loads_with_trust_code(tinynet):
    with pytest.raises(PermissionError, match="fixture_models:TinyNet"):
        load(V1 / "user_class_tinynet.safetensors")
    sys.path.insert(0, str(FIXTURES))
    try:
        model = load(V1 / "user_class_tinynet.safetensors", trust_code=True)
    finally:
        sys.path.remove(str(FIXTURES))
    assert type(model.module).__name__ == "TinyNet"
