"""The task matrix for fine-tuning: per kind of task, a small saved base and new data it can learn.

Each base is the task-matrix spec (``task_specs.py``) trained briefly on a source task of the same kind
whose targets are scrambled (classes permuted, a regression target negated), so the new data needs what
fine-tuning brings: the pretrained features and a fresh head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from task_specs import SEQ, TOKEN_SPEC, VOCAB, dense_spec


def binary(rng, n):
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


def multiclass(rng, n):
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 4)) * 0.3 + np.eye(4)[y] * 3).astype(np.float32)
    return x, y.astype(np.int64)


def regression(rng, n):
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, (2 * x[:, 0] - x[:, 1] + 0.5).astype(np.float32)[:, None]


def tokens(rng, n):
    y = rng.integers(0, 2, n)
    low = rng.integers(0, VOCAB // 2, (n, SEQ))
    return (low + y[:, None] * (VOCAB // 2)).astype(np.int64), y.astype(np.int64)


def _scrambled(task, y):
    return -y if task == "regression" else (y + 1) % int(y.max() + 1)


TASKS = {
    #  name: (data, spec, loss, new head's outputs, what a good model reaches)
    "binary_one_logit": (binary, dense_spec(4, 1), "binary_crossentropy", 1, 0.9),
    "multiclass": (multiclass, dense_spec(4, 3), "categorical_crossentropy", 3, 0.9),
    "regression": (regression, dense_spec(3, 1), "mse", 1, 0.9),
    "token_sequence": (tokens, TOKEN_SPEC, "categorical_crossentropy", 2, 0.9),
}


def make_base(task: str, folder: Path) -> Path:
    """A saved base for ``task``: its spec trained for a few epochs on scrambled targets."""
    from modelkeep import fit, save
    from modelkeep.data import dataset_from_arrays
    from modelkeep.nn import build
    from modelkeep.spec import load_spec

    make, spec, loss, _, _ = TASKS[task]
    x, y = make(np.random.default_rng(10), 200)
    source = dataset_from_arrays(x, _scrambled(task, y), name=f"{task}-source")
    result = fit(build(load_spec(spec), seed=0), source, epochs=3, batch_size=64, learning_rate=0.02, loss=loss,
                 progress=False, seed=0)
    return save(result, folder / f"{task}-base.safetensors")


def write_data(task: str, folder: Path, n: int = 300, seed: int = 1) -> tuple[Path, np.ndarray, np.ndarray]:
    """New data for ``task`` as an .npz file, and a held-out test set (x, y) drawn apart from it."""
    make = TASKS[task][0]
    rng = np.random.default_rng(seed)
    x, y = make(rng, n)
    path = folder / f"{task}-data.npz"
    np.savez(path, x=x, y=y)
    return path, *make(rng, 100)


def score(task: str, model, x, y) -> float:
    """R² for regression, accuracy otherwise, of a loaded model on (x, y)."""
    prediction = model.predict(x)
    if task == "regression":
        values = np.asarray(prediction.values).reshape(-1)
        return float(1 - np.sum((values - y[:, 0]) ** 2) / np.sum((y[:, 0] - y[:, 0].mean()) ** 2))
    return float(np.mean(np.asarray(prediction.labels) == np.asarray([str(v) for v in y])))
