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
