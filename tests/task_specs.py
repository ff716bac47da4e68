"""The four kinds of task every capability is tested on, as small specs shared by the task-matrix tests."""
from __future__ import annotations

VOCAB, SEQ = 20, 8


def dense_spec(inputs: int, units: int, dtype: str = "float32") -> dict:
    """One hidden layer and a head named ``head``: binary one-logit (units=1), multi-class, or regression."""
    return {"layers": [{"kind": "Input", "shape": [inputs], "dtype": dtype},
                       {"kind": "Dense", "units": 16, "activation": "relu"},
                       {"kind": "Dense", "name": "head", "units": units}]}


# token ids -> embedding -> mean over time -> two classes
TOKEN_SPEC = {"layers": [{"kind": "Input", "name": "tokens", "shape": [SEQ], "dtype": "int64"},
                         {"kind": "Embedding", "num_embeddings": VOCAB, "embedding_dim": 8},
                         {"kind": "GlobalAvgPool", "data_format": "channels_last"},
                         {"kind": "Dense", "name": "head", "units": 2}]}


# Data each task's model can learn, shared by the task-matrix tests (``rng``: a NumPy Generator).
def binary_data(rng, n):
    import numpy as np

    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


def multiclass_data(rng, n, *, noise=0.3, shift=3.0):
    import numpy as np

    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 4)) * noise + np.eye(4)[y] * shift).astype(np.float32)
    return x, y.astype(np.int64)


def regression_data(rng, n):
    import numpy as np

    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, (2 * x[:, 0] - x[:, 1] + 0.5).astype(np.float32)[:, None]


def token_data(rng, n):
    import numpy as np

    y = rng.integers(0, 2, n)
    low = rng.integers(0, VOCAB // 2, (n, SEQ))
    return (low + y[:, None] * (VOCAB // 2)).astype(np.int64), y.astype(np.int64)
