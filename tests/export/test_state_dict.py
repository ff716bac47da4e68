"""``export_state_dict``: a plain tensor dict that ``torch.load(weights_only=True)`` reads and a freshly
built module takes, with the same predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export_tasks import TASKS, fresh_inputs, train_and_save
from modelkeep import export_state_dict, load
from modelkeep.cli.main import main
from modelkeep.nn import build
from modelkeep.zoo import ZOO


@pytest.mark.parametrize("task", ["multiclass", "token_sequence"])
def test_round_trip_into_a_fresh_build(task, tmp_path):
    path = train_and_save(task, tmp_path / "model.safetensors")
    out = export_state_dict(path, tmp_path / "weights.pt")
    state = torch.load(out, weights_only=True)
    model = load(path)
    fresh = build(model.spec, seed=123)
    assert type(state) is dict and set(state) == set(fresh.state_dict())
    assert all(type(t) is torch.Tensor for t in state.values())
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    x = fresh_inputs(task)
    if model.preprocessing is not None:
        x = model.preprocessing.transform(x)
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(torch.from_numpy(x)).numpy(), model.module(torch.from_numpy(x)).numpy())


def test_tied_weights_are_stored_once_and_the_file_holds_only_the_weights(tmp_path):
    """GPT's head uses the token embedding's matrix: the state dict (and the file) hold it once, and a fresh
    build that loads it predicts as the original does."""
    entry = ZOO.get("gpt2")
    module = build(entry.spec(**entry.small), seed=0)
    out = export_state_dict(module, tmp_path / "gpt2.pt")
    state = torch.load(out, weights_only=True)
    assert set(state) == set(module.state_dict()) and "layers.lm_head.weight" not in state
    stored = sum(t.numel() * t.element_size() for t in state.values())
    assert out.stat().st_size < stored + 64 * 1024
    assert module.training  # exporting never changes the caller's module
    fresh = build(entry.spec(**entry.small), seed=5).eval()
    fresh.load_state_dict(state, strict=True)
    tokens = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens), module.eval()(tokens), rtol=0, atol=0)


def test_cli_state_dict_by_flag_and_by_extension(tmp_path, capsys):
    path = train_and_save("binary_one_logit", tmp_path / "model.safetensors")
    assert main(["export", path, "--format", "state-dict", str(tmp_path / "a.bin")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["export", path, str(tmp_path / "b.pth"), "--json"]) == 0
    assert '"format": "state-dict"' in capsys.readouterr().out
    first = torch.load(tmp_path / "a.bin", weights_only=True)
    second = torch.load(tmp_path / "b.pth", weights_only=True)
    assert first.keys() == second.keys() == load(path).module.state_dict().keys()


def test_a_state_dict_imported_back_exports_to_onnx_and_predicts_alike(tmp_path):
    """Out as a plain state dict, in again with ``import_model``, out to ONNX: the same answers throughout."""
    from modelkeep import export_onnx, import_model

    path = train_and_save("regression", tmp_path / "model.safetensors")
    model = load(path)
    weights = export_state_dict(path, tmp_path / "weights.pt")
    import_model(weights, tmp_path / "back.safetensors", spec=model.spec, strict=True,
                 preprocessing=model.preprocessing, task="regression")
    back = load(tmp_path / "back.safetensors")
    x = fresh_inputs("regression")
    np.testing.assert_array_equal(back.predict(x).values, model.predict(x).values)
    exported = export_onnx(back, tmp_path / "back.onnx")
    assert exported.max_abs_diff <= 1e-5 and exported.preprocessing_folded is True
