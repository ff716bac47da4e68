"""User-defined nn.Module classes: stored as a class reference plus JSON arguments, imported only with consent."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from modelkeep.artifact import load, save
from modelkeep.errors import ConfigError, SpecError, TrustError


class Net(nn.Module):
    def __init__(self, features: int, classes: int = 3, *, activation: str = "relu") -> None:
        super().__init__()
        self.hidden = nn.Linear(features, 8)
        self.out = nn.Linear(8, classes)
        self.activation = activation
        self.register_buffer("calls", torch.zeros(()), persistent=False)  # not in the file

    def forward(self, x):  # (B, features) -> (B, classes)
        return self.out(torch.relu(self.hidden(x)))


def test_round_trip_with_model_class_and_trust_code(tmp_path):
    model = Net(4, activation="relu")
    path = save(model, tmp_path / "net.safetensors", init={"features": 4, "activation": "relu"},
                example_input=torch.zeros(2, 4), labels=["a", "b", "c"])
    loaded = load(path, model_class=Net)
    x = torch.randn(5, 4)
    assert torch.equal(loaded.module(x), model.eval()(x))
    assert loaded.manifest.architecture == {"type": "class", "class": f"{Net.__module__}:Net",
                                            "init": {"features": 4, "activation": "relu"}}
    assert loaded.manifest.signature["inputs"][0]["shape"] == [None, 4]
    assert loaded.manifest.signature["outputs"][0]["shape"] == [None, 3]
    assert loaded.predict(x.numpy()).labels[0] in ("a", "b", "c")
    trusted = load(path, trust_code=True)
    assert type(trusted.module) is Net and not trusted.module.calls.is_meta


def test_without_consent_the_class_is_neither_imported_nor_run(tmp_path, monkeypatch):
    module_dir = tmp_path / "code"
    module_dir.mkdir()
    (module_dir / "payload_module.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(tmp_path / 'IMPORTED')!r}).touch()
        import torch
        class Payload(torch.nn.Module):
            def __init__(self):
                super().__init__()
                pathlib.Path({str(tmp_path / 'CONSTRUCTED')!r}).touch()
                self.w = torch.nn.Linear(2, 2)
    """))
    monkeypatch.syspath_prepend(str(module_dir))
    import payload_module

    path = save(payload_module.Payload(), tmp_path / "p.safetensors")
    (tmp_path / "IMPORTED").unlink()
    (tmp_path / "CONSTRUCTED").unlink()
    del sys.modules["payload_module"]
    with pytest.raises(TrustError) as caught:
        load(path)
    assert "payload_module:Payload" in str(caught.value)
    assert "trust_code=True" in str(caught.value) and "model_class=" in str(caught.value)
    assert "payload_module" not in sys.modules
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "CONSTRUCTED").exists()
    load(path, trust_code=True)
    assert (tmp_path / "IMPORTED").exists()


def test_constructor_arguments_must_be_json(tmp_path):
    with pytest.raises(ConfigError, match="must be JSON"):
        save(Net(4), tmp_path / "x.safetensors", init={"features": 4, "activation": nn.ReLU()})
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_constructor_arguments_are_named(tmp_path):
    with pytest.raises(SpecError, match=r"\['features'\]"):
        save(Net(4), tmp_path / "x.safetensors")


def test_classes_defined_in_functions_cannot_be_named(tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(1, 1)

    with pytest.raises(ConfigError, match="module level"):
        save(Local(), tmp_path / "x.safetensors")


def test_model_class_must_be_a_module(tmp_path):
    path = save(Net(4), tmp_path / "n.safetensors", init={"features": 4})
    with pytest.raises(TypeError, match="nn.Module subclass"):
        load(path, model_class=dict)


def test_a_class_defined_in_main_warns_at_save_and_loads_with_model_class(tmp_path):
    from modelkeep.artifact.class_codec import UnimportableClassWarning

    script_class = type("ScriptNet", (Net,), {"__module__": "__main__"})  # as if defined in a script run directly
    model = script_class(4)
    with pytest.warns(UnimportableClassWarning, match=r"__main__.*model_class=ScriptNet"):
        path = save(model, tmp_path / "script.safetensors", init={"features": 4}, example_input=torch.zeros(1, 4))
    assert type(load(path, model_class=script_class).module) is script_class


def test_trust_error_says_that_trust_code_imports_the_module_first(tmp_path):
    path = save(Net(4), tmp_path / "net.safetensors", init={"features": 4})
    with pytest.raises(TrustError, match="runs that module's top-level code before the class is even checked"):
        load(path)
