"""Shared fixtures: a real model trained on the real digits set, once per test session."""
from __future__ import annotations

import os
import tempfile

import pytest

# Keras (used by the interop tests to check our files against the real thing) runs on PyTorch here: no TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")
# registry URLs are pulled into a cache: keep the tests' copies out of the user's ~/.cache
os.environ.setdefault("MODELKEEP_CACHE", tempfile.mkdtemp(prefix="modelkeep-test-cache-"))

from modelkeep.quickstart import DIGITS_CNN


@pytest.fixture(scope="session")
def digits_splits():
    from modelkeep.data import load_dataset, split_dataset

    return split_dataset(load_dataset("digits"), seed=0)


@pytest.fixture(scope="session")
def trained(digits_splits):
    """A digits CNN trained for a few epochs (the FitResult)."""
    from modelkeep.data import Standardize
    from modelkeep.nn import build
    from modelkeep.train import fit

    model = build(DIGITS_CNN, seed=0)
    return fit(model, digits_splits.train, digits_splits.validation, digits_splits.test,
               epochs=4, batch_size=64, preprocessing=Standardize(per_feature=False), progress=False)


@pytest.fixture()
def saved(trained, tmp_path):
    """A fresh copy of the trained model's file."""
    from modelkeep.artifact import save

    return save(trained, tmp_path / "model.safetensors")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's tests, so runs in this process and in subprocesses compute alike."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
