"""The real Keras 3 (on PyTorch: tests/conftest.py sets KERAS_BACKEND=torch), imported once, for tests that write
Keras files. Skips when Keras is missing (this folder is itself named ``keras``: an empty namespace is no Keras)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture(scope="session")
def keras():
    module = pytest.importorskip("keras")
    if not hasattr(module, "Sequential"):
        pytest.skip("keras is not installed")
    return module
