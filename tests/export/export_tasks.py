"""The four kinds of task, trained briefly and saved, for the export tests (API and CLI).

binary with one logit (BCE, sigmoid post-processing), multi-class (softmax), regression (identity) and a
token-sequence language model (int64 token ids, Embedding + LSTM, one class per position). The first three carry
affine preprocessing (standardize, min-max, standardize then rescale), which the ONNX export folds in.
"""
from __future__ import annotations

import numpy as np

VOCAB, SEQ = 12, 5


def _binary(rng, n):
    x = (rng.standard_normal((n, 4)) * 3 + 10).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 15).astype(np.int64)


def _multiclass(rng, n):
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 4)) * 0.3 + np.eye(4)[y] * 3 + 5).astype(np.float32)
    return x, y.astype(np.int64)


def _regression(rng, n):
    x = (rng.standard_normal((n, 3)) * 50 + 200).astype(np.float32)
    return x, ((x[:, 0] - 200) / 25 - (x[:, 1] - 200) / 50).astype(np.float32)[:, None]


def _tokens(rng, n):
    start = rng.integers(0, VOCAB, (n, 1))
    sequence = (start + np.arange(SEQ + 1)) % VOCAB  # next token = this token + 1
    return sequence[:, :-1].astype(np.int64), sequence[:, 1:].astype(np.int64)


def _dense(inputs, units):
    return {"layers": [{"kind": "Input", "name": "features", "shape": [inputs]},
                       {"kind": "Dense", "units": 16, "activation": "relu"},
                       {"kind": "Dense", "name": "head", "units": units}]}


LANGUAGE_MODEL = {"layers": [{"kind": "Input", "name": "tokens", "shape": [SEQ], "dtype": "int64"},
                             {"kind": "Embedding", "num_embeddings": VOCAB, "embedding_dim": 8},
                             {"kind": "LSTM", "units": 8, "return_sequences": True},
                             {"kind": "Dense", "name": "next_token", "units": VOCAB}]}

TASKS = {
    #  name: (data, spec, loss, preprocessing config)
    "binary_one_logit": (_binary, _dense(4, 1), "binary_crossentropy", "standardize"),
    "multiclass": (_multiclass, _dense(4, 3), "categorical_crossentropy", "min_max"),
    "regression": (_regression, _dense(3, 1), "mse", ["standardize", {"type": "rescale", "factor": 2.0,
                                                                        "offset": 0.5}]),
    "token_sequence": (_tokens, LANGUAGE_MODEL, "categorical_crossentropy", None),
}


def fresh_inputs(task: str, n: int = 6, seed: int = 99) -> np.ndarray:
    return TASKS[task][0](np.random.default_rng(seed), n)[0]


def train_and_save(task: str, path) -> str:
    """A model of ``task`` trained for a few epochs and saved at ``path``."""
    from modelkeep import fit, save
    from modelkeep.data import dataset_from_arrays
    from modelkeep.nn import build
    from modelkeep.processing.preprocess import make_preprocessing
    from modelkeep.spec import load_spec

    make, spec, loss, preprocessing = TASKS[task]
    x, y = make(np.random.default_rng(0), 96)
    train = dataset_from_arrays(x, y, name=task, task="regression" if task == "regression" else "classification")
    model = build(load_spec(spec), seed=0)
    result = fit(model, train, epochs=3, batch_size=32, learning_rate=0.02, loss=loss, progress=False, seed=0,
                 preprocessing=make_preprocessing(preprocessing))
    return str(save(result, path))


def raw_outputs(model, x: np.ndarray) -> np.ndarray:
    """What ``predict`` feeds its post-processor: the network's outputs on the preprocessed inputs."""
    import torch

    x = np.asarray(x, dtype=model._input_dtype())
    if model.preprocessing is not None:
        x = model.preprocessing.transform(x)
    with torch.no_grad():
        return model.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def run_onnx(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the ONNX file at ``path`` on ``x``, by name."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
