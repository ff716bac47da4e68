"""``evaluate_file`` (what ``modelkeep evaluate --data`` runs) reads the data for the model it scores: images brought to
the model's input shape as they are read, and classes matched to the model's labels by name (issue 10 #12)."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep import Dataset, Standardize, fit, save
from modelkeep.nn import build
from modelkeep.train.evaluation import evaluate_file


def _trained(tmp_path, x, y, labels, input_shape):
    spec = {"layers": [{"kind": "Input", "shape": list(input_shape)}, {"kind": "Flatten"},
                       {"kind": "Dense", "units": len(labels)}]}
    result = fit(build(spec, seed=0), Dataset("train", x, y, labels), epochs=30, batch_size="full",
                 learning_rate=0.05, preprocessing=Standardize(), progress=False)
    return save(result, tmp_path / "model.safetensors")


def test_classes_are_matched_to_the_model_labels_by_name_not_sorted_order(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (rng.normal(size=(200, 3)) + y[:, None] * 3).astype(np.float32)
    path = _trained(tmp_path, x, y.astype(np.int64), ("malignant", "benign"), (3,))  # not sorted order
    names = np.array(["malignant", "benign"])[y]
    rows = [",".join([*map(str, row), name]) for row, name in zip(x, names)]
    (tmp_path / "data.csv").write_text("a,b,c,diagnosis\n" + "\n".join(rows) + "\n")
    report = evaluate_file(path, str(tmp_path / "data.csv"), split="all")
    assert report["labels"] == ["malignant", "benign"] and report["metrics"]["accuracy"] > 0.95


def test_images_are_brought_to_the_model_input_shape(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.stack([np.full((1, 8, 8), v, np.float32) for v in (0.0, 255.0)] * 10)
    y = np.array([0, 1] * 10, np.int64)
    path = _trained(tmp_path, x, y, ("dark", "light"), (1, 8, 8))
    for label, value in (("dark", 0), ("light", 255)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(value + rng.integers(-3, 4, (200, 300)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "images" / label / f"{i}.png")
    report = evaluate_file(path, str(tmp_path / "images"), split="all")
    assert report["samples"] == 6
    assert report["metrics"]["accuracy"] == 1.0  # 200x300 pictures, scored as the 8x8 inputs the model takes
