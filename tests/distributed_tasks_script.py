"""The four task kinds trained by ``fit`` on one process, or as one of torchrun's, for the distributed task matrix.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_tasks_script.py OUT

Every process joins the gloo group once (``training_processes``) and trains a binary one-logit, a multi-class,
a regression and a token-sequence model in turn, each on the same global batch. The coordinator saves each
model file (``OUT/<task>.safetensors``) and writes ``OUT/result.json``: every task's per-epoch training and
validation losses and the score of the saved file, reloaded, on held-out data.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from task_specs import TOKEN_SPEC, binary_data, dense_spec, multiclass_data, regression_data, token_data

TASKS = {  # name: (data, spec, loss)
    "binary_one_logit": (binary_data, dense_spec(4, 1), "binary_crossentropy"),
    "multiclass": (multiclass_data, dense_spec(4, 3), "categorical_crossentropy"),
    "regression": (regression_data, dense_spec(3, 1), "mse"),
    "token_sequence": (token_data, TOKEN_SPEC, "categorical_crossentropy"),
}


def score(task: str, prediction, y) -> float:
    import numpy as np

    if task == "regression":
        values = np.asarray(prediction.values).reshape(-1)
        return float(1 - np.sum((values - y[:, 0]) ** 2) / np.sum((y[:, 0] - y[:, 0].mean()) ** 2))
    return float(np.mean(np.asarray(prediction.labels) == np.asarray([str(v) for v in y])))


def main(out: Path) -> int:
    import numpy as np
    import torch

    from modelkeep import fit, load, save
    from modelkeep.data import dataset_from_arrays
    from modelkeep.nn import build
    from modelkeep.spec import load_spec
    from modelkeep.train.distributed import training_processes

    torch.set_num_threads(1)
    results = {}
    with training_processes("ddp") as strategy:
        for task, (make, spec, loss) in TASKS.items():
            rng = np.random.default_rng(0)
            train, validation = (dataset_from_arrays(*make(rng, n), name=f"{task}-{n}") for n in (256, 64))
            test_x, test_y = make(rng, 100)
            result = fit(build(load_spec(spec), seed=0), train, validation, epochs=20, batch_size=64,
                         learning_rate=0.02, loss=loss, progress=False, seed=0, deterministic=True, device="cpu",
                         strategy=strategy)
            if strategy.is_coordinator:
                path = save(result, out / f"{task}.safetensors")
                results[task] = {"loss": [r["loss"] for r in result.history.records],
                                 "val_loss": [r["val_loss"] for r in result.history.records],
                                 "score": score(task, load(path).predict(test_x), test_y)}
        if strategy.is_coordinator:
            (out / "result.json").write_text(json.dumps({"world_size": strategy.world_size, "tasks": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
