"""``modelkeep predict`` reads what ``train`` reads, through the bounded readers, and answers in valid JSON.

Issue 10: CSV input (item 23), non-finite inputs refused and JSON without NaN (item 4), a user class
loaded with ``--trust-code`` (item 23), a forged ``.npy`` and a ``.npy`` of strings as one-line errors
(item 16), image files and folders brought to the model's input shape.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelkeep.cli._inputs import read_inputs
from modelkeep.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IRIS_LIKE = {"name": "iris_like", "layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 3}]}
IMAGES = {"name": "tiny_images", "layers": [{"kind": "Input", "shape": [1, 8, 8]}, {"kind": "Flatten"},
                                             {"kind": "Dense", "units": 2}]}


def modelkeep(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("modelkeep") or sys.executable
    prefix = [exe] if exe != sys.executable else [sys.executable, "-m", "modelkeep"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelkeep: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "allow_pickle" not in result.stderr
    return lines[0]


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from modelkeep.artifact import save
    from modelkeep.nn import build

    folder = tmp_path_factory.mktemp("predict")
    iris = save(build(IRIS_LIKE, seed=0), folder / "iris.safetensors", labels=["setosa", "versicolor", "virginica"],
                task="classification")
    images = save(build(IMAGES, seed=0), folder / "images.safetensors", labels=["dark", "light"],
                  task="classification")
    return folder, iris, images


@pytest.fixture(scope="module")
def samples():
    return np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def expected_labels(path, x):
    from modelkeep.artifact import load

    return load(path).predict(x).labels


def test_csv_input_works_like_train_reads_it(models, samples, tmp_path):
    folder, iris, _ = models
    header = "sepal_length,sepal_width,petal_length,petal_width"
    rows = [",".join(f"{v:.6g}" for v in row) for row in samples]
    x = np.array([[float(v) for v in row.split(",")] for row in rows], dtype=np.float32)
    features = tmp_path / "features.csv"
    features.write_text(header + "\n" + "\n".join(rows) + "\n")
    with_target = tmp_path / "with_target.csv"
    with_target.write_text(header + ",species\n" + "\n".join(f"{r},setosa" for r in rows) + "\n")
    numeric_target = tmp_path / "numeric_target.csv"
    numeric_target.write_text("\n".join(f"{r},2" for r in rows) + "\n")
    for csv in (features, with_target, numeric_target):
        assert np.array_equal(read_inputs(str(csv), (4,)).x, x)
    result = modelkeep("predict", str(iris), str(with_target), "--json")
    assert result.returncode == 0, result.stderr
    assert [r["label"] for r in strict_json(result.stdout)] == expected_labels(iris, x)


def test_csv_target_column_named_or_recorded(models, samples, tmp_path):
    from modelkeep.artifact import save
    from modelkeep.nn import build

    folder, iris, _ = models
    x = np.round(samples, 3)
    first = tmp_path / "label_first.csv"
    first.write_text("label,a,b,c,d\n" + "\n".join(f"{i % 3}," + ",".join(map(str, row)) for i, row in enumerate(x)))
    assert np.allclose(read_inputs(str(first), (4,), target="label").x, x)
    assert np.allclose(read_inputs(str(first), (4,), target="0").x, x)
    assert np.allclose(read_inputs(str(first), (4,), recorded_target="label").x, x)
    features = tmp_path / "features.csv"
    features.write_text("a,b,c,d\n" + "\n".join(",".join(map(str, row)) for row in x))
    assert np.allclose(read_inputs(str(features), (4,), recorded_target="label").x, x)
    with pytest.raises(DataError, match="no column named"):
        read_inputs(str(features), (4,), target="label")
    recorded = save(build(IRIS_LIKE, seed=0), folder / "recorded.safetensors", labels=["0", "1", "2"],
                    task="classification", hyperparameters={"data": {"source": "train.csv",
                                                                     "options": {"target": "label"}}})
    result = modelkeep("predict", str(recorded), str(first), "--json")
    assert result.returncode == 0, result.stderr
    assert [r["label"] for r in strict_json(result.stdout)] == expected_labels(recorded, x.astype(np.float32))
    named = modelkeep("predict", str(iris), str(first), "--target", "label", "--json")
    assert named.returncode == 0, named.stderr
    assert [r["label"] for r in strict_json(named.stdout)] == expected_labels(iris, x.astype(np.float32))


def test_csv_of_the_wrong_width_is_one_line(models, tmp_path):
    _, iris, _ = models
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2,3,4,5,6\n7,8,9,10,11,12\n")
    one_line_error(modelkeep("predict", str(iris), str(wide)), "6 columns", "expects 4 features")


def test_numpy_inputs_keep_their_dtype(tmp_path):
    tokens = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.save(tmp_path / "tokens.npy", tokens)
    np.savez(tmp_path / "tokens.npz", x=tokens)
    for name in ("tokens.npy", "tokens.npz"):
        x = read_inputs(str(tmp_path / name), (4,)).x
        assert x.dtype == np.int64 and np.array_equal(x, tokens)
    flat = np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)
    np.save(tmp_path / "flat.npy", flat)
    assert read_inputs(str(tmp_path / "flat.npy"), (1, 8, 8)).x.shape == (2, 1, 8, 8)


def test_hostile_numpy_inputs_are_one_line_errors(models, tmp_path):
    from numpy.lib import format as npy_format

    _, iris, _ = models
    forged = tmp_path / "forged.npy"
    with open(forged, "wb") as handle:  # declares 10^12 rows of 4 float32 and holds 16 bytes
        npy_format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)})
        handle.write(b"\0" * 16)
    one_line_error(modelkeep("predict", str(iris), str(forged)), "forged.npy")
    strings = tmp_path / "strings.npy"
    np.save(strings, np.array([["a", "b", "c", "d"]]))
    one_line_error(modelkeep("predict", str(iris), str(strings)), "text")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(modelkeep("predict", str(iris), str(objects)), "pickle")
    unknown = tmp_path / "samples.parquet"
    unknown.write_bytes(b"PAR1")
    one_line_error(modelkeep("predict", str(iris), str(unknown)), "CSV")
    one_line_error(modelkeep("predict", str(iris), str(tmp_path / "absent.npy")), "absent.npy")


def test_nonfinite_inputs_are_refused_unless_allowed_and_json_stays_valid(models, samples, tmp_path):
    _, iris, _ = models
    x = samples.copy()
    x[1] = np.nan
    x[2, 0] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, x)
    one_line_error(modelkeep("predict", str(iris), str(path)), "--allow-nonfinite")
    result = modelkeep("predict", str(iris), str(path), "--json", "--allow-nonfinite")
    assert result.returncode == 0, result.stderr
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    records = strict_json(result.stdout)
    assert len(records) == 5 and records[1]["probability"] is None


def test_images_are_read_at_the_model_input_size(models, tmp_path):
    from PIL import Image

    _, _, images = models
    folder = tmp_path / "images"
    folder.mkdir()
    for name, shade in (("a.png", 10), ("b.png", 240)):
        Image.new("L", (40, 30), shade).save(folder / name)
    Image.new("RGB", (9, 9), (1, 2, 3)).save(folder / "c.jpg")
    inputs = read_inputs(str(folder), (1, 8, 8))
    assert inputs.x.shape == (3, 1, 8, 8) and [Path(f).name for f in inputs.files] == ["a.png", "b.png", "c.jpg"]
    result = modelkeep("predict", str(images), str(folder), "--json")
    assert result.returncode == 0, result.stderr
    records = strict_json(result.stdout)
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.png", "c.jpg"]
    single = modelkeep("predict", str(images), str(folder / "a.png"), env={"COLUMNS": "300"})
    assert single.returncode == 0 and "a.png" in single.stdout
    with pytest.raises(DataError, match="channels, height, width"):
        read_inputs(str(folder), (4,))


def test_user_class_needs_trust_code(tmp_path):
    sys.path.insert(0, str(FIXTURES))
    try:
        import torch
        from fixture_models import TinyNet

        from modelkeep.artifact import save

        path = save(TinyNet(), tmp_path / "tiny.safetensors", example_input=torch.zeros(2, 4),
                    labels=["a", "b", "c"])
    finally:
        sys.path.remove(str(FIXTURES))
    np.save(tmp_path / "x.npy", np.ones((2, 4), dtype=np.float32))
    env = {"PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")])}
    one_line_error(modelkeep("predict", str(path), str(tmp_path / "x.npy"), env=env), "--trust-code")
    result = modelkeep("predict", str(path), str(tmp_path / "x.npy"), "--trust-code", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert len(strict_json(result.stdout)) == 2
    help_text = modelkeep("predict", "--help").stdout
    assert "--trust-code" in help_text and "runs its code" in " ".join(help_text.split())
