"""Hand-written specs, sequential and graph: residual blocks, branches, bidirectional LSTMs, sharing, errors."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ShapeError, SpecError
from modelkeep.nn import build
from modelkeep.spec import ModelSpec, count_parameters, load_spec

RESIDUAL = {
    "name": "residual",
    "layers": [
        {"kind": "Input", "name": "x", "shape": [8, 16, 16]},
        {"kind": "Conv2D", "name": "conv1", "filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"kind": "BatchNorm2D", "name": "bn1"},
        {"kind": "ReLU", "name": "relu1"},
        {"kind": "Conv2D", "name": "conv2", "filters": 8, "kernel_size": 3, "padding": 1, "use_bias": False},
        {"kind": "BatchNorm2D", "name": "bn2"},
        {"kind": "Add", "name": "add", "inputs": ["bn2", "x"]},
        {"kind": "ReLU", "name": "out"},
        {"kind": "GlobalAvgPool", "name": "pool"},
        {"kind": "Dense", "name": "fc", "units": 4},
    ],
}

BILSTM = {
    "layers": [
        {"kind": "Input", "name": "tokens", "shape": [12], "dtype": "int64"},
        {"kind": "Embedding", "name": "embed", "num_embeddings": 100, "embedding_dim": 16},
        {"kind": "LSTM", "name": "lstm", "units": 32, "bidirectional": True, "return_sequences": True},
        {"kind": "LSTM", "name": "lstm2", "units": 8, "bidirectional": True},
        {"kind": "Dense", "name": "fc", "units": 3, "activation": "softmax"},
    ],
}


def test_residual_block_counts_builds_and_runs():
    spec = load_spec(RESIDUAL)
    report = count_parameters(spec)
    rows = {row.name: row for row in report.layers}
    assert rows["conv1"].formula == "3*3*8*8" and rows["conv1"].parameters == 576
    assert rows["bn1"].parameters == 16 and rows["bn1"].buffers == 17
    assert report.total == 2 * 576 + 2 * 16 + 8 * 4 + 4
    assert report.buffers == 34
    module = build(spec, seed=0)
    assert report.total == sum(p.numel() for p in module.parameters())
    y = module(torch.randn(2, 8, 16, 16))
    assert y.shape == (2, 4)
    assert spec.shapes["add"] == (8, 16, 16)


def test_bidirectional_lstm_counts_and_runs():
    spec = load_spec(BILSTM)
    rows = {row.name: row for row in count_parameters(spec).layers}
    assert rows["lstm"].formula == "2*4*(16*32+32*32+2*32)"
    assert rows["lstm"].parameters == 2 * 4 * (16 * 32 + 32 * 32 + 64)
    assert rows["lstm2"].parameters == 2 * 4 * (64 * 8 + 64 + 16)
    assert "Keras" in rows["lstm"].note
    assert spec.shapes["lstm"] == (12, 64) and spec.shapes["lstm2"] == (16,)
    module = build(spec, seed=0)
    probs = module(torch.randint(0, 100, (5, 12)))
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert spec.final_activation() == "softmax"


def test_last_state_of_bidirectional_lstm_joins_both_directions():
    spec = load_spec({"layers": [{"kind": "Input", "shape": [6, 3]},
                                 {"kind": "LSTM", "name": "seq", "units": 4, "bidirectional": True,
                                  "return_sequences": True}]})
    last = spec.replace("seq", return_sequences=False)
    a, b = build(spec, seed=0), build(last, seed=0)
    x = torch.randn(2, 6, 3)
    every, final = a(x), b(x)
    torch.testing.assert_close(final[:, :4], every[:, -1, :4])  # forward direction: last step
    torch.testing.assert_close(final[:, 4:], every[:, 0, 4:])   # backward direction: first step


def test_branches_and_concatenate_multiple_inputs_and_outputs():
    spec = load_spec({
        "layers": [
            {"kind": "Input", "name": "image", "shape": [3, 8, 8]},
            {"kind": "Input", "name": "meta", "shape": [5]},
            {"kind": "Conv2D", "name": "a", "inputs": ["image"], "filters": 4, "kernel_size": 1},
            {"kind": "Conv2D", "name": "b", "inputs": ["image"], "filters": 6, "kernel_size": 3, "padding": 1},
            {"kind": "Concatenate", "name": "cat", "inputs": ["a", "b"]},
            {"kind": "GlobalAvgPool", "name": "pool"},
            {"kind": "Concatenate", "name": "joined", "inputs": ["pool", "meta"]},
            {"kind": "Dense", "name": "fc", "units": 2},
        ],
        "outputs": ["fc", "cat"],
    })
    assert spec.shapes["cat"] == (10, 8, 8) and spec.shapes["joined"] == (15,)
    fc, cat = build(spec, seed=0)(torch.randn(2, 3, 8, 8), torch.randn(2, 5))
    assert fc.shape == (2, 2) and cat.shape == (2, 10, 8, 8)


def test_layers_may_be_listed_out_of_order():
    layers = [RESIDUAL["layers"][i] for i in (0, 1, 2, 3, 4, 5, 6)]
    shuffled = [dict(layer) for layer in layers]
    for index in range(1, len(shuffled)):
        shuffled[index].setdefault("inputs", [shuffled[index - 1]["name"]])
    shuffled = [shuffled[0], shuffled[6], *shuffled[1:6]]
    spec = load_spec({"layers": shuffled, "outputs": ["add"]})
    assert [layer.name for layer in spec.layers][-1] == "add"


def test_cycle_is_named():
    with pytest.raises(SpecError, match=r"the spec has a cycle through layer\(s\) \['a', 'b'\]"):
        load_spec({"layers": [{"kind": "Input", "name": "x", "shape": [4]},
                              {"kind": "Dense", "name": "a", "units": 4, "inputs": ["b"]},
                              {"kind": "Add", "name": "b", "inputs": ["a", "x"]}]})


def test_missing_input_is_named():
    with pytest.raises(SpecError, match="layer 'fc' \\(Dense\\) reads input 'nowhere', which is not a layer"):
        load_spec({"layers": [{"kind": "Input", "name": "x", "shape": [4]},
                              {"kind": "Dense", "name": "fc", "units": 4, "inputs": ["nowhere"]}]})


def test_residual_shape_mismatch_names_the_add():
    bad = {"layers": [dict(layer) for layer in RESIDUAL["layers"]]}
    bad["layers"][4]["filters"] = 16  # conv2 now gives 16 channels; the shortcut has 8
    bad["layers"][5] = {"kind": "BatchNorm2D", "name": "bn2"}
    with pytest.raises(ShapeError) as info:
        load_spec(bad)
    assert str(info.value) == ("layer 'add' (Add) received input shapes [[16, 16, 16], [8, 16, 16]] but expects "
                               "every input to have the same shape")


@pytest.mark.parametrize("data, message", [
    ("not a dict", "a spec must be a JSON/YAML object"),
    ({"layers": []}, "a spec needs a non-empty 'layers' list"),
    ({"layers": [{"kind": "Input", "shape": [2]}], "heads": "x"}, "unknown top-level spec field(s) ['heads']"),
    ({"layers": [{"kind": "Input", "shape": [2]}], "head": "nope"}, "head 'nope' is not the name of a layer"),
    ({"layers": [{"kind": "Input", "shape": [2]}, {"kind": "Add", "inputs": ["input_1"]}]},
     "takes two or more inputs"),
    ({"layers": [{"kind": "Dense", "units": 2}]}, "has no input; start the spec with an Input layer"),
    ({"layers": [{"kind": "Input", "shape": [2], "name": "a b"}]}, "must be a Python identifier"),
])
def test_malformed_specs(data, message):
    with pytest.raises(SpecError) as info:
        ModelSpec.from_dict(data)
    assert message in str(info.value)


def test_shared_layers_count_once_and_share_weights():
    spec = load_spec({"layers": [
        {"kind": "Input", "name": "left", "shape": [6]},
        {"kind": "Input", "name": "right", "shape": [6]},
        {"kind": "Dense", "name": "tower", "units": 4, "inputs": ["left"]},
        {"kind": "Dense", "name": "tower_right", "units": 4, "inputs": ["right"], "shares": "tower"},
        {"kind": "Concatenate", "name": "both", "inputs": ["tower", "tower_right"]},
    ]})
    report = count_parameters(spec)
    assert report.total == 28
    assert "shares the weights of 'tower'" in {r.name: r for r in report.layers}["tower_right"].formula
    module = build(spec, seed=0)
    assert sum(p.numel() for p in module.parameters()) == 28
    assert "layers.tower_right.weight" not in module.state_dict()
    x = torch.randn(2, 6)
    out = module(x, x)
    torch.testing.assert_close(out[:, :4], out[:, 4:])
    assert ModelSpec.from_json(spec.to_json()).to_dict() == spec.to_dict()


def test_sharing_needs_the_same_layer():
    with pytest.raises(SpecError, match="shares='a' needs the same kind, fields and input shapes"):
        load_spec({"layers": [{"kind": "Input", "name": "x", "shape": [6]},
                              {"kind": "Dense", "name": "a", "units": 6},
                              {"kind": "Dense", "name": "b", "units": 5, "shares": "a"}]})


def test_tied_embedding_head():
    spec = load_spec({"layers": [
        {"kind": "Input", "shape": [5], "dtype": "int64"},
        {"kind": "Embedding", "name": "wte", "num_embeddings": 30, "embedding_dim": 8},
        {"kind": "Dense", "name": "lm_head", "units": 30, "use_bias": False, "tied_to": "wte"},
    ]})
    assert count_parameters(spec).total == 240
    module = build(spec, seed=0)
    assert module.layers["lm_head"].weight is module.layers["wte"].weight
    assert sum(p.numel() for p in module.parameters()) == 240
    assert set(module.state_dict()) == {"layers.wte.weight"}
    module(torch.randint(0, 30, (2, 5))).sum().backward()
    with pytest.raises(SpecError, match="tied_to='wte' needs units=30 and input features 8"):
        spec.replace("lm_head", units=31)
    with pytest.raises(SpecError, match="tied_to='nope' must name an Embedding layer"):
        spec.replace("lm_head", tied_to="nope")


def test_transfer_interface_on_a_hand_written_spec():
    module = build(RESIDUAL, seed=0).eval()
    assert module.head_name == "fc" and module.head is module.layers["fc"]
    x = torch.randn(2, 8, 16, 16)
    features = module.features(x)
    assert features.shape == (2, 8)
    torch.testing.assert_close(module.forward_head(features), module(x))
    before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("layers.fc.")}
    new_head = module.reset_head(7)
    assert new_head.out_features == 7 and module(x).shape == (2, 7)
    assert module.spec.shapes["fc"] == (7,)
    for key, value in before.items():
        torch.testing.assert_close(module.state_dict()[key], value)
    with pytest.raises(SpecError, match="reset_head needs a positive number of outputs"):
        module.reset_head(0)


def test_head_inferred_through_parameter_free_layers():
    spec = load_spec(BILSTM | {"layers": BILSTM["layers"] + [{"kind": "Dropout", "rate": 0.1}]})
    assert spec.head_layer().name == "fc"


def test_frozen_layers_are_reported():
    data = {"layers": [dict(layer) for layer in RESIDUAL["layers"]]}
    data["layers"][1]["trainable"] = False
    report = count_parameters(build(data))
    rows = {r.name: r for r in report.layers}
    assert rows["conv1"].frozen and report.non_trainable == 576
    assert count_parameters(data).non_trainable == 576
    module = build(RESIDUAL)
    module.layers["fc"].requires_grad_(False)
    assert count_parameters(module).non_trainable == 36


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(load_spec(RESIDUAL).to_yaml())
    assert load_spec(path).to_dict() == load_spec(RESIDUAL).to_dict()
