"""Small trained members over the task matrix, and the combination an ensemble must give, computed by hand.

Each task gets three members from the same spec with different seeds, trained briefly with ``modelkeep.fit``
on data it can learn, saved as ordinary files. ``hand_combination`` combines the members' own ``predict``
answers in NumPy, the way docs/format.md says the ensemble does.
"""
from __future__ import annotations

import numpy as np

from modelkeep import fit, save
from modelkeep.data import dataset_from_arrays
from modelkeep.nn import build
from modelkeep.spec import load_spec

from task_specs import TOKEN_SPEC, binary_data, dense_spec, multiclass_data, regression_data, token_data


def _multiclass(rng, n):
    return multiclass_data(rng, n, noise=0.8, shift=1.5)  # overlapping classes: members disagree sometimes


TASKS = {  # name: (data, spec, loss, methods that apply)
    "binary_one_logit": (binary_data, dense_spec(4, 1), "binary_crossentropy",
                         ("average", "weighted", "soft-vote", "majority")),
    "multiclass": (_multiclass, dense_spec(4, 3), "categorical_crossentropy",
                   ("average", "weighted", "soft-vote", "majority")),
    "regression": (regression_data, dense_spec(3, 1), "mse", ("average", "weighted")),
    "token_sequence": (token_data, TOKEN_SPEC, "categorical_crossentropy", ("average", "soft-vote", "majority")),
}
WEIGHTS = (1.0, 2.0, 1.0)


def train_members(task, folder, *, count=3, epochs=4):
    """``count`` members of ``task`` trained with seeds 0, 1, ...; their paths, and held-out inputs."""
    make, spec, loss, _ = TASKS[task]
    rng = np.random.default_rng(0)
    train = dataset_from_arrays(*make(rng, 240), name=f"{task}-train")
    test_x, test_y = make(rng, 60)
    paths = []
    for seed in range(count):
        result = fit(build(load_spec(spec), seed=seed), train, epochs=epochs, batch_size=32, learning_rate=0.02,
                     loss=loss, progress=False, seed=seed)
        paths.append(save(result, folder / f"{task}_{seed}.safetensors", durable=False))
    return paths, test_x, test_y


def hand_combination(task, method, predictions, weights=None):
    """``(probabilities or values, labels)`` the ensemble must give, from the members' own predictions."""
    count = len(predictions)
    w = np.full(count, 1.0 / count) if weights is None else np.asarray(weights, dtype=np.float64) / sum(weights)
    if task == "regression":
        return sum(wi * p.values.astype(np.float64) for wi, p in zip(w, predictions)), None
    names = predictions[0].class_names
    if method == "majority":
        shares = sum(wi * np.eye(len(names))[np.asarray([names.index(label) for label in p.labels])]
                     for wi, p in zip(w, predictions))
    else:
        shares = sum(wi * p.probabilities.astype(np.float64) for wi, p in zip(w, predictions))
    if task == "binary_one_logit":  # one output: class 1 when its share is >= 0.5
        chosen = (shares[:, 1] >= 0.5).astype(int)
    else:  # several: the argmax, ties to the lowest class index
        chosen = shares.argmax(axis=1)
    return shares, [names[i] for i in chosen]
