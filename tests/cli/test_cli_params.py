"""``modelkeep params`` and ``modelkeep zoo``: JSON and tables, overrides, and exit status 2 on bad specs."""
from __future__ import annotations

import json

import pytest

from modelkeep.cli.main import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name, total", [("resnet50", 25_557_032), ("vgg16", 138_357_544),
                                         ("resnet18", 11_689_512), ("alexnet", 61_100_840)])
def test_params_json_on_zoo_names(capsys, name, total):
    status, out, _ = run(capsys, "params", name, "--json")
    assert status == 0
    document = json.loads(out)
    assert document["total"] == total and document["trainable"] == total and document["non_trainable"] == 0
    assert document["layers"][0]["kind"] == "Input"
    assert sum(row["parameters"] for row in document["layers"]) == total


def test_params_set_and_input_shape(capsys):
    _, out, _ = run(capsys, "params", "vgg16", "--set", "num_classes=10", "--json")
    assert json.loads(out)["total"] == 138_357_544 - 4097 * 990
    _, out, _ = run(capsys, "params", "resnet18", "--input-shape", "3,64,64", "--json")
    document = json.loads(out)
    assert document["total"] == 11_689_512 and document["layers"][0]["output_shape"] == [3, 64, 64]
    _, out, _ = run(capsys, "params", "mlp", "--set", "hidden=[64, 32]", "--set", "input_features=10", "--json")
    assert json.loads(out)["total"] == 10 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_params_table(capsys):
    status, out, _ = run(capsys, "params", "lstm_classifier")
    assert status == 0
    assert "2*4*(128*128+128*128+2*128)" in out
    assert "total 2,824,706 parameters" in out and "Keras" in out
    _, out, _ = run(capsys, "params", "resnet18")
    assert "plus 9,620 buffer values (batch-norm running statistics" in out


def test_params_on_spec_files(capsys, tmp_path):
    spec = {"layers": [{"kind": "Input", "shape": [3, 8, 8]},
                       {"kind": "Conv2D", "name": "conv", "filters": 4, "padding": "same"},
                       {"kind": "GlobalAvgPool"}, {"kind": "Dense", "name": "fc", "units": 2}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    _, out, _ = run(capsys, "params", str(path), "--json")
    assert json.loads(out)["total"] == 3 * 3 * 3 * 4 + 4 + 4 * 2 + 2
    _, out, _ = run(capsys, "params", str(path), "--set", "fc.units=5", "--input-shape", "3", "16", "16", "--json")
    document = json.loads(out)
    assert document["total"] == 112 + 25 and document["layers"][1]["output_shape"] == [4, 16, 16]


def bad(tmp_path, layers):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"layers": layers}))
    return str(path)


@pytest.mark.parametrize("layers, message", [
    ([{"kind": "Input", "name": "x", "shape": [4]}, {"kind": "Dense", "name": "a", "units": 4, "inputs": ["b"]},
      {"kind": "Add", "name": "b", "inputs": ["a", "x"]}], "cycle through layer(s) ['a', 'b']"),
    ([{"kind": "Input", "shape": [3, 8, 8]}, {"kind": "Flatten"}, {"kind": "Conv2D", "name": "conv", "filters": 2}],
     "layer 'conv' (Conv2D) received input shape [192] but expects (channels, height, width)"),
    ([{"kind": "Input", "shape": [4]}, {"kind": "Dence", "name": "fc", "units": 2}],
     "unknown layer kind 'Dence'; did you mean 'Dense'"),
])
def test_bad_specs_exit_2_naming_the_layer(capsys, tmp_path, layers, message):
    status, out, err = run(capsys, "params", bad(tmp_path, layers))
    assert status == 2 and out == ""
    assert err.startswith("modelkeep: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["params", "resnet19"], "'resnet19' is neither a spec file nor a zoo model; did you mean 'resnet18'"),
    (["params", "missing.json"], "spec file 'missing.json' does not exist"),
    (["params", "vgg16", "--set", "num_classes"], "--set takes KEY=VALUE"),
    (["params", "vgg16", "--set", "classes=3"], "has no option(s) ['classes']"),
    (["params", "lenet5", "--input-shape", "1", "28", "28"], "layer 'c5' (Conv2D) received input shape [16, 4, 4]"),
    (["params", "mlp", "--input-shape", "a,b"], "--input-shape takes whole numbers"),
])
def test_user_errors_exit_2(capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == 2 and message in err


def test_zoo_list_and_show(capsys):
    status, out, _ = run(capsys, "zoo", "list", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert status == 0 and entries["resnet50"]["parameters"] == 25_557_032
    assert entries["lenet5"]["input_shape"] == [1, 32, 32] and entries["vgg16"]["options"]["num_classes"] == 1000
    _, out, _ = run(capsys, "zoo", "list")
    assert "transformer_classifier" in out
    _, out, _ = run(capsys, "zoo", "show", "lenet5", "--set", "num_classes=3")
    spec = json.loads(out)
    assert spec["layers"][-1] == {"kind": "Dense", "name": "output", "units": 3}
    _, out, _ = run(capsys, "zoo", "show", "mlp", "--yaml")
    assert out.startswith("format_version: 1\nname: mlp\n")


def test_a_spec_file_name_is_printed_literally(capsys, tmp_path):
    spec = tmp_path / "hostile.json"
    spec.write_text(json.dumps({"name": "[red]x\x1b]0;owned\x07",
                                "layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 3}]}))
    status, out, _ = run(capsys, "params", str(spec))
    assert status == 0 and "\x1b" not in out and "\x07" not in out
    assert "[red]x\\x1b]0;owned\\x07" in out
