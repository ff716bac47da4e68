"""The quickstart: a small CNN on scikit-learn's digits, trained, saved, reloaded from the file, used.

This is the whole life of a model in one function, and what ``modelkeep
quickstart`` runs. Everything it does goes through the public API.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIGITS_CNN = {
    "name": "digits_cnn",
    "layers": [
        {"kind": "Input", "name": "image", "shape": [1, 8, 8]},
        {"kind": "Conv2D", "name": "conv1", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"kind": "MaxPool2D", "name": "pool1", "pool_size": 2},                               # (32, 4, 4)
        {"kind": "Conv2D", "name": "conv2", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"kind": "MaxPool2D", "name": "pool2", "pool_size": 2},                               # (64, 2, 2)
        {"kind": "Flatten", "name": "flatten"},
        {"kind": "Dense", "name": "hidden", "units": 64, "activation": "relu"},
        {"kind": "Dropout", "name": "dropout", "rate": 0.25},
        {"kind": "Dense", "name": "logits", "units": 10},
    ],
}


@dataclass(frozen=True)
class QuickstartReport:
    model_path: Path
    spec_path: Path
    test_accuracy: float
    reloaded_accuracy: float
    samples: list[dict[str, Any]]
    file_bytes: int
    checkpoint_dir: Path | None = None
    resumed_from: str | None = None


def run_quickstart(
    out_dir: str | Path = "quickstart-run",
    *,
    epochs: int = 15,
    seed: int = 0,
    progress: str | bool = "auto",
    model_name: str = "model.safetensors",
    resume: bool = True,
) -> QuickstartReport:
    """Train the digits CNN, save it to ``out_dir/model.safetensors``, reload it and predict.

    Training checkpoints every epoch into ``out_dir/checkpoints`` (asynchronously; the last 2 and
    the best by validation loss are kept), so an interrupted quickstart run again resumes.
    """
    import numpy as np

    from .artifact import load, save
    from .data import load_dataset, split_dataset
    from .io.atomic import atomic_write_text
    from .nn import build
    from .processing import Standardize
    from .spec import load_spec
    from .train import fit
    from .train.checkpointing import CheckpointSettings

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(DIGITS_CNN)
    spec_path = out / "spec.json"
    atomic_write_text(spec_path, spec.to_json() + "\n")

    splits = split_dataset(load_dataset("digits"), seed=seed)
    model = build(spec, seed=seed)
    result = fit(
        model, splits.train, splits.validation, splits.test,
        loss="categorical_crossentropy", optimizer="adam", learning_rate=1e-3,
        epochs=epochs, batch_size=32, seed=seed, preprocessing=Standardize(per_feature=False), progress=progress,
        checkpoint=CheckpointSettings(directory=str(out / "checkpoints"), every_steps=None, every_epochs=1,
                                      keep_last=2, keep_best=1, monitor="val_loss", asynchronous=True),
        resume=resume,
    )
    model_path = save(
        result, out / model_name,
        card={"license": "CC0-1.0", "intended_use": "a demonstration of modelkeep on 8x8 digits",
              "training_data": "scikit-learn digits (UCI ML hand-written digits), 80/10/10 stratified split"},
    )

    reloaded = load(model_path)
    prediction = reloaded.predict(splits.test.x)
    reloaded_accuracy = float(np.mean(np.array(prediction.labels) == np.array(splits.test.labels)[splits.test.y]))
    samples = [
        {"index": int(i), "true": splits.test.labels[splits.test.y[i]], "predicted": prediction.labels[i],
         "probability": float(prediction.probabilities[i].max())}
        for i in range(min(8, len(splits.test)))
    ]
    return QuickstartReport(model_path, spec_path, result.test_metrics["accuracy"], reloaded_accuracy, samples,
                            model_path.stat().st_size, Path(result.checkpoint_dir), result.resumed_from)
