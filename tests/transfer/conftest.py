"""Shared fixtures of the transfer tests: the new task's splits and a small pretrained base (an MLP with BatchNorm,
trained on iris and saved)."""
from __future__ import annotations

import pytest

from modelkeep.artifact import save
from modelkeep.data import load_dataset, split_dataset
from modelkeep.nn import build
from modelkeep.train import fit
from transfer_helpers import BASE_SPEC


@pytest.fixture(scope="package")
def iris():
    return split_dataset(load_dataset("iris"), seed=0)


@pytest.fixture(scope="package")
def base_file(iris, tmp_path_factory):
    """A pretrained base: the BatchNorm MLP trained 3 epochs on iris, saved as a modelkeep file."""
    model = build(BASE_SPEC, seed=0)
    result = fit(model, iris.train, epochs=3, batch_size=16, progress=False, learning_rate=0.01)
    return save(result, tmp_path_factory.mktemp("base") / "base.safetensors")
