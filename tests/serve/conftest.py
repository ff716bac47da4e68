"""Fixtures of the serving tests: the model files of every task kind, and a test client over one app serving them all."""
from __future__ import annotations

import pytest

from serve_models import TASKS, save_image_model, save_task_model


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    files = {name: save_task_model(name, folder / f"{name}.safetensors") for name in TASKS}
    files["digits"] = save_image_model(folder / "digits.safetensors")
    return files


@pytest.fixture(scope="module")
def client(model_files):
    from fastapi.testclient import TestClient

    from modelkeep.serve import ServeSettings, create_app

    settings = ServeSettings(sources=tuple(str(p) for p in model_files.values()), max_queue_delay_us=1000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client
