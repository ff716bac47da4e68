"""Model files of every task kind for the serving tests, and valid requests for them (shared by the tests)."""
from __future__ import annotations

import numpy as np

from task_specs import TOKEN_SPEC, dense_spec

#: name -> (spec, save options). Names are the files' stems, so the served model names.
TASKS = {
    "binary": (dense_spec(4, 1), {"task": "classification", "labels": ["no", "yes"]}),
    "multiclass": (dense_spec(4, 3), {"task": "classification", "labels": ["a", "b", "c"]}),
    "regression": (dense_spec(3, 1), {"task": "regression"}),
    "tokens": (TOKEN_SPEC, {"task": "classification", "labels": ["neg", "pos"]}),
}


def save_task_model(name: str, path, *, seed: int = 0):
    from modelkeep.artifact import save
    from modelkeep.nn import build
    from modelkeep.processing.preprocess import Standardize
    from modelkeep.spec import load_spec

    spec, options = TASKS[name]
    options = dict(options)
    if name == "multiclass":  # one model with saved preprocessing: the server must apply it
        rng = np.random.default_rng(1)
        options["preprocessing"] = Standardize().fit((rng.standard_normal((64, 4)) * 3 + 5).astype(np.float32))
    return save(build(load_spec(spec), seed=seed), path, durable=False, **options)


def save_image_model(path):
    from modelkeep.artifact import save
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN
    from modelkeep.spec import load_spec

    return save(build(load_spec(DIGITS_CNN), seed=0), path, durable=False, task="classification",
                labels=[str(i) for i in range(10)])


def rows_for(name: str, count: int, seed: int = 0) -> np.ndarray:
    """Valid raw input rows for a task model."""
    from task_specs import SEQ, VOCAB

    rng = np.random.default_rng(seed)
    if name == "tokens":
        return rng.integers(0, VOCAB, (count, SEQ)).astype(np.int64)
    if name == "digits":
        return (rng.random((count, 1, 8, 8)) * 16).astype(np.float32)
    width = 3 if name == "regression" else 4
    return (rng.standard_normal((count, width)) * 3 + 5).astype(np.float32)


def v2_request(name: str, rows: np.ndarray, **extra) -> dict:
    input_name = {"tokens": "tokens", "digits": "image"}.get(name, "input_1")
    datatype = "INT64" if rows.dtype == np.int64 else "FP32"
    return {"inputs": [{"name": input_name, "shape": list(rows.shape), "datatype": datatype,
                        "data": rows.reshape(-1).tolist()}], **extra}
