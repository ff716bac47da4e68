"""A small deterministic training run that checkpoints with modelkeep.checkpoint, for the resume tests.

A two-layer MLP with dropout learns sklearn's digits with Adam and a per-epoch
StepLR; every random source a real loop has is used on purpose (torch's global
RNG through dropout, a named torch generator for input noise, Python's
``random`` and NumPy's legacy global RNG for augmentation), and an
early-stopping-like callback keeps counters, so a resume that forgot any piece
of state would not end bit-identical. The data order of epoch ``e`` is a pure
function of ``(seed, e)``, as in ``fit``.

Used in-process by tests/test_checkpoint_resume.py and as a subprocess (killed
with SIGKILL or SIGTERM) by the same tests and by scripts/torture_resume.py::

    python tests/checkpoint_train_script.py DIR --epochs 3 --every 2 --async --out final.safetensors

Prints ``ready step=N total=M`` once it has restored (or started fresh) and is about to train.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modelkeep.checkpoint import (AnyOf, CheckpointManager, EveryNEpochs, EveryNSteps, KeepLastN, Position,
                                  SignalGuard, CheckpointState)

SEED = 0


class Crash(RuntimeError):
    """Raised by ``run`` at a chosen point to simulate a process dying there."""


class EarlyStopping:
    """Counts epochs without improvement of the validation loss (state: best, wait, epochs seen)."""

    def __init__(self) -> None:
        self.best = math.inf
        self.wait = 0
        self.seen = 0

    def update(self, value: float) -> None:
        self.seen += 1
        if value < self.best:
            self.best, self.wait = value, 0
        else:
            self.wait += 1

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait, self.seen = state["best"], state["wait"], state["seen"]


@dataclass(frozen=True)
class Config:
    epochs: int = 3
    batch_size: int = 64
    hidden: int = 32
    every: int = 1                 # checkpoint every N steps (and at every epoch end)
    asynchronous: bool = False
    durable: bool = True
    keep: int = 2
    crash_after_step: int | None = None     # raise Crash after this step, before its checkpoint
    crash_in_epoch_end: int | None = None   # raise Crash in this epoch's end-of-epoch work, before its checkpoint
    step_sleep: float = 0.0                 # seconds to sleep per step (gives a signal time to arrive)


def load_data(path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if path:
        with np.load(path, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data, bunch.target
    return torch.as_tensor(x / 16.0, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)


def run(directory: str | Path, config: Config, data: tuple[torch.Tensor, torch.Tensor], *,
        resume_command: str = "") -> dict[str, torch.Tensor]:
    """Train (resuming from ``directory`` when it holds a checkpoint); return the final weights."""
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    x, y = data
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(config.hidden, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.8)
    noise = torch.Generator().manual_seed(SEED + 7)
    early_stopping = EarlyStopping()
    state = CheckpointState(model, optimizer, scheduler, callbacks={"early_stopping": early_stopping},
                          generators={"noise": noise})
    manager = CheckpointManager(directory, save_on=AnyOf(EveryNSteps(config.every), EveryNEpochs(1)),
                                keep=KeepLastN(config.keep), asynchronous=config.asynchronous,
                                durable=config.durable)
    restored = manager.restore(state)
    position = restored.position if restored else Position(0, 0, 0)
    history: list = list(restored.history) if restored else []
    batches = math.ceil(len(x) / config.batch_size)
    step = position.step
    loss_fn = torch.nn.CrossEntropyLoss()
    with SignalGuard() as guard, manager:
        print(f"ready step={step} total={config.epochs * batches}", flush=True)
        for epoch in range(position.epoch, config.epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED * 1000 + epoch))
            model.train()
            for batch in range(position.batch if epoch == position.epoch else 0, batches):
                index = order[batch * config.batch_size:(batch + 1) * config.batch_size]
                xb = x[index] * (1.0 + 0.05 * random.random())
                xb = xb + torch.randn(xb.shape, generator=noise) * 0.02
                xb = xb + torch.from_numpy(np.random.normal(0.0, 0.02, xb.shape).astype(np.float32))
                loss = loss_fn(model(xb), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if config.step_sleep:
                    time.sleep(config.step_sleep)
                if config.crash_after_step == step:
                    raise Crash(f"crash after step {step}")
                here = Position(epoch, batch + 1, step)
                if manager.should_save(here) or guard.requested:
                    name = manager.save(state, here, history=history)
                if guard.requested:
                    manager.close()
                    print(guard.resume_message(resume_command or f"rerun with the same folder {directory}",
                                               checkpoint=name), flush=True)
                    sys.exit(guard.exit_code)
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model(x[:300]), y[:300]))
            early_stopping.update(val_loss)
            scheduler.step()
            history.append({"epoch": epoch + 1, "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"]})
            if config.crash_in_epoch_end == epoch:
                raise Crash(f"crash in the end of epoch {epoch}")
            here = Position(epoch + 1, 0, step)
            if manager.should_save(here, metrics={"val_loss": val_loss}, epoch_end=True):
                manager.save(state, here, metrics={"val_loss": val_loss}, history=history)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument("--no-durable", dest="durable", action="store_false",
                        help="skip fsync (a SIGKILL cannot lose the page cache; only a power cut can)")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--data", help="an .npz with x and y (default: sklearn digits)")
    parser.add_argument("--out", help="write the final weights here (a modelkeep tensor file)")
    args = parser.parse_args(argv)
    config = Config(epochs=args.epochs, hidden=args.hidden, every=args.every, asynchronous=args.asynchronous,
                    durable=args.durable, step_sleep=args.step_sleep)
    resume = " ".join([sys.executable, *sys.argv])
    weights = run(args.directory, config, load_data(args.data), resume_command=resume)
    if args.out:
        from modelkeep.artifact.tensors import write_tensors

        write_tensors(args.out, weights, {"step": "final"})
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
