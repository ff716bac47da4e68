"""One transfer interface for every model: zoo, spec-built, imported and user classes through the adapter;
selectors by index, name, glob and "all but head"; the settings; the parameter table."""
from __future__ import annotations

import pytest
import torch

import modelkeep
from modelkeep import ConfigError, ModelNotFoundError
from modelkeep.artifact import load, save
from modelkeep.importers import import_model
from modelkeep.nn import build
from modelkeep.transfer import TransferSettings, as_transferable, finetune, freeze, summary, unfreeze
from modelkeep.transfer.tables import model_summary_rows
from modelkeep.zoo import get_spec

from transfer_helpers import BASE_SPEC, QUICK, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class UserNet(torch.nn.Module):
    """A user class: a backbone and a classifier, no spec."""

    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 6))
        self.act = torch.nn.ReLU()
        self.classifier = torch.nn.Linear(6, outputs)

    def forward(self, x):
        return self.classifier(self.act(self.backbone(x)))


def test_spec_modules_answer_natively_and_user_classes_through_the_adapter():
    spec_view = as_transferable(build(get_spec("lenet5"), seed=0))
    assert spec_view.native and spec_view.head_path == "layers.output"
    assert spec_view.features(torch.zeros(2, 1, 32, 32)).shape == (2, 84)
    spec_view.replace_head(7, seed=0)
    assert spec_view.module(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    assert spec_view.module.spec.head_layer().kind.fields.units == 7  # saving records the new head

    net = UserNet()
    view = as_transferable(net)  # default head: the last nn.Linear
    assert view.head_path == "classifier" and not view.native
    assert view.features(torch.zeros(5, 4)).shape == (5, 6)
    assert [layer.name for layer in view.layers()] == ["backbone", "classifier"]
    new = view.replace_head(10, seed=1)
    assert net.classifier is new and net(torch.zeros(5, 4)).shape == (5, 10)
    again = UserNet()
    as_transferable(again).replace_head(10, seed=1)
    assert torch.equal(again.classifier.weight, net.classifier.weight)  # seeded: the same fresh head
    assert as_transferable(net, head="backbone.2").head_path == "backbone.2"
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        as_transferable(net, head="nope")


def test_selectors_by_index_name_glob_and_all_but_head():
    model = build(BASE_SPEC, seed=0)
    names = lambda chosen: sorted(n.split(".")[1] for n in chosen)  # noqa: E731
    assert set(names(freeze(model, 0))) == {"hidden"}
    unfreeze(model)
    assert set(names(freeze(model, -1))) == {"out"}
    unfreeze(model)
    assert set(names(freeze(model, "bn", "layers.mid"))) == {"bn", "mid"}
    unfreeze(model)
    assert set(names(freeze(model, "layers.*id*"))) == {"hidden", "mid"}
    unfreeze(model)
    assert set(names(freeze(model, "all_but_head"))) == {"hidden", "bn", "mid"}
    assert [p.requires_grad for p in model.layers.out.parameters()] == [True, True]
    assert not any(p.requires_grad for p in model.layers.hidden.parameters())
    for bad, message in ((7, "out of range"), ("conv*", "matches no layer"), (1.5, "selector")):
        with pytest.raises(ConfigError, match=message):
            freeze(model, bad)


def test_transfer_settings_from_dict_checks_every_value():
    settings = TransferSettings.from_dict({"head": 10, "freeze": ["conv1", 2], "l2sp": {"alpha": 0.1, "beta": 0.01},
                                           "batchnorm": "frozen", "unfreeze_every": 2, "discriminative": 0.5})
    assert settings.to_dict()["freeze"] == ["conv1", 2] and settings.l2sp == {"alpha": 0.1, "beta": 0.01}
    assert TransferSettings.from_dict(settings.to_dict()) == settings
    for bad, message in (({"heads": 3}, "did you mean 'head'"), ({"batchnorm": "eval"}, "batchnorm must be"),
                         ({"discriminative": 2.0}, r"in \(0, 1\]"), ({"l2sp": -1}, "alpha must be"),
                         ({"freeze": "all"}, "nothing to train"), ({"probe_epochs": -1}, ">= 0"),
                         ({"groups": [{"pattern": "x", "lr": 1}]}, "unknown key 'lr'")):
        with pytest.raises(ConfigError, match=message) as caught:
            TransferSettings.from_dict(bad)
        assert "\n" not in str(caught.value)


@pytest.fixture()
def imported(base_file, tmp_path):
    """The base's weights as a plain PyTorch .pt state dict, imported back with import_model."""
    state = {k: v for k, v in load(base_file).module.state_dict().items()}
    torch.save(state, tmp_path / "weights.pt")
    import_model(tmp_path / "weights.pt", tmp_path / "imported.safetensors", spec=BASE_SPEC)
    return tmp_path / "imported.safetensors"


@pytest.mark.parametrize("kind", ["file", "model", "spec_module", "zoo", "imported", "user_class"])
def test_finetune_takes_every_kind_of_base(kind, iris, base_file, imported):
    base = {"file": str(base_file), "model": load(base_file), "spec_module": build(BASE_SPEC, seed=0),
            "zoo": {"zoo": "mlp", "input_features": 4, "hidden": [8]}, "imported": imported, "user_class": UserNet()}[kind]
    result = finetune(base, iris.train, iris.validation, iris.test, head=3, freeze="all_but_head", **QUICK)
    assert result.test_metrics["accuracy"] >= 0.0 and len(result.history["loss"]) == 2
    assert result.lineage["relation"] == "fine-tuned"
    assert result.lineage["trained_layers"] == ([as_transferable(result.model).layer_label(
        as_transferable(result.model).layers()[-1])])
    if kind == "zoo":
        assert result.lineage["base"] == "zoo:mlp" and "parent" not in result.lineage
    if kind in ("file", "model", "imported"):
        assert result.lineage["parent"]["content_hash"] == load(base if kind != "model" else base_file).content_hash


def test_missing_bases_and_bad_arguments_are_one_line_errors(iris):
    with pytest.raises(ModelNotFoundError, match="neither a model file nor a zoo model") as caught:
        finetune("resnet_nope", iris.train, **QUICK)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="unknown transfer setting"):
        finetune(build(BASE_SPEC, seed=0), iris.train, transfer={"frezee": "all"}, **QUICK)
    with pytest.raises(ConfigError, match="matches no layer"):
        finetune(build(BASE_SPEC, seed=0), iris.train, freeze=["encoder"], **QUICK)
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        finetune(build(BASE_SPEC, seed=0), iris.train, epoch=2)


def test_keywords_override_the_transfer_settings_they_are_given_with(iris):
    result = finetune(build(BASE_SPEC, seed=0), iris.train, transfer=TransferSettings(freeze="all_but_head", head=3),
                      freeze=["hidden"], **QUICK)
    assert result.transfer["freeze"] == ["hidden"] and result.transfer["head"] == 3
    assert result.lineage["frozen_layers"] == ["hidden"]


def test_summary_shows_what_is_frozen_and_each_layers_learning_rate(iris):
    result = finetune(build(BASE_SPEC, seed=0), iris.train, freeze=["hidden"], discriminative=0.5,
                      learning_rate=0.01, **QUICK)
    rows = {row["layer"]: row for row in model_summary_rows(result.model, result.optimizer)}
    assert rows["hidden"]["frozen"] == "yes" and rows["hidden"]["lr"] is None
    assert rows["out"]["head"] and rows["out"]["lr"] == pytest.approx(0.01)
    assert rows["mid"]["lr"] == pytest.approx(0.005) and rows["bn"]["lr"] == pytest.approx(0.0025)
    text = summary(result)
    assert "out (head)" in text and "0.0025" in text and "yes" in text
    assert text.splitlines()[-1] == f"total: {sum(p.numel() for p in result.model.parameters())} parameters, " \
        f"{sum(p.numel() for p in result.model.parameters() if p.requires_grad)} trainable"
    assert modelkeep.summary is summary and modelkeep.finetune is finetune


def test_a_loaded_model_keeps_its_fitted_preprocessing(iris, tmp_path):
    from modelkeep.processing import Standardize

    model = build(BASE_SPEC, seed=0)
    pretrained = modelkeep.fit(model, iris.train, epochs=1, batch_size=16, progress=False,
                               preprocessing=Standardize())
    path = save(pretrained, tmp_path / "with_scaler.safetensors")
    shifted = iris.train.subset(slice(0, 60))
    result = finetune(path, shifted, freeze="all_but_head", **QUICK)
    assert result.preprocessing.to_dict() == pretrained.preprocessing.to_dict()  # not re-fitted on the new data
    before = snapshot(result.model)
    assert before  # the result is ready to save


ENCODER_SPEC = {"name": "tiny_encoder", "layers": [
    {"kind": "Input", "name": "tokens", "shape": [6], "dtype": "int64"},
    {"kind": "Embedding", "name": "embed", "num_embeddings": 12, "embedding_dim": 8, "padding_idx": 0},
    {"kind": "TransformerEncoder", "name": "block", "num_heads": 2, "ff_dim": 16, "inputs": ["embed", "tokens"]},
    {"kind": "SequencePool", "name": "pool", "inputs": ["block", "tokens"]},
    {"kind": "L2Normalize", "name": "normalize"},
]}


def test_an_encoder_without_a_head_gets_one_added_and_keeps_every_weight(tmp_path):
    """A sentence encoder (as imported from Hugging Face) has no head: head=N adds a Dense on its output."""
    import numpy as np

    from modelkeep.data import dataset_from_arrays

    encoder = build(ENCODER_SPEC, seed=0)
    base = save(encoder, tmp_path / "encoder.safetensors")
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 12, size=(40, 6)).astype("int64")
    tokens[:, 4:] = 0  # padding
    labels = (tokens[:, 0] > 6).astype("int64")
    data = dataset_from_arrays(tokens, labels, name="tokens")
    before = snapshot(encoder)
    result = finetune(base, data, head=2, freeze="all", epochs=2, batch_size=8, progress=False)
    assert result.model.spec.head == "head" and result.model.spec.outputs == ("head",)
    assert result.model(torch.as_tensor(tokens[:3])).shape == (3, 2)
    for name, value in before.items():  # the encoder, frozen, is bit-identical
        assert torch.equal(value, result.model.state_dict()[name]), name
    assert result.lineage["trained_layers"] == ["head"]
    loaded = load(save(result, tmp_path / "classifier.safetensors"))
    assert loaded.predict(tokens[:2]).labels is not None
    with pytest.raises(ConfigError, match="has no head; give it one with head=N"):
        finetune(base, data, freeze="all_but_head", epochs=1, progress=False)


def test_labels_fit_settings_and_group_rules_pass_through(iris):
    from modelkeep.train import FitSettings, GroupRule

    result = finetune(build(BASE_SPEC, seed=0), iris.train, iris.validation, labels=["a", "b", "c"],
                      settings=FitSettings(epochs=1, batch_size=16, learning_rate=0.02,
                                           param_groups=[GroupRule("layers.out.*", lr_scale=2.0)]),
                      groups=[GroupRule("layers.mid.*", lr_scale=0.5)], progress=False)
    assert result.labels == ("a", "b", "c") and len(result.history["loss"]) == 1
    rates = sorted(group["lr"] for group in result.optimizer.param_groups)
    assert rates == pytest.approx([0.01, 0.02, 0.04])  # mid at half, the rest at the rate, the head at twice
    with pytest.raises(ConfigError, match="names 2 classes but the dataset"):
        finetune(build(BASE_SPEC, seed=0), iris.train, labels=["a", "b"], **QUICK)
