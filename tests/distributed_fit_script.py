"""One ``fit`` run on the digits, on one process or as one of torchrun's, for the distributed tests and benchmark.

Run plainly it trains on one process; under ``python -m torch.distributed.run --nproc-per-node N``
each process joins the gloo group (``training_processes``) and trains its shard::

    python -m torch.distributed.run --nproc-per-node 2 tests/distributed_fit_script.py OUT \\
        --checkpoint DIR --kill-at-step 10

``--kill-at-step N`` makes every process SIGKILL itself right after optimizer step N (before that
step's checkpoint): a real kill at a chosen point, the same in every run. The coordinator writes
``OUT/weights.safetensors`` and ``OUT/result.json`` (history without times, test metrics, where it
resumed from, the number of processes); every process writes ``OUT/rank<R>.json`` with the numbers
it saw, so a test can check that all of them saw the same.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def mlp(hidden: int, dropout: float) -> dict:
    layers = [{"kind": "Input", "name": "image", "shape": [1, 8, 8]}, {"kind": "Flatten", "name": "flatten"},
              {"kind": "Dense", "name": "hidden", "units": hidden, "activation": "relu"}]
    if dropout:
        layers.append({"kind": "Dropout", "name": "dropout", "rate": dropout})  # torch's global RNG, per process
    layers.append({"kind": "Dense", "name": "logits", "units": 10})
    return {"name": "distributed_mlp", "layers": layers}


class KillAt:
    """SIGKILLs this process after optimizer step ``step`` (a callback runs before the step's checkpoint)."""

    def __init__(self, step: int | None, sleep: float = 0.0) -> None:
        self.step, self.sleep = step, sleep

    def on_step_end(self, state, logs) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", help="checkpoint folder (resumed when it holds checkpoints)")
    parser.add_argument("--every", type=int, default=4, help="checkpoint every N optimizer steps")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep after each step")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--strategy", default="auto")
    args = parser.parse_args(argv)

    import torch

    from modelkeep.artifact.tensors import write_tensors
    from modelkeep.data import Standardize, load_dataset, split_dataset
    from modelkeep.nn import build
    from modelkeep.train import fit
    from modelkeep.train.checkpointing import CheckpointSettings
    from modelkeep.train.distributed import training_processes

    torch.set_num_threads(1)  # every run computes alike, so runs can be compared bit for bit
    splits = split_dataset(load_dataset("digits"), seed=0)
    checkpoint = (CheckpointSettings(directory=args.checkpoint, every_steps=args.every, asynchronous=False,
                                     durable=False) if args.checkpoint else None)
    started = time.perf_counter()
    with training_processes(args.strategy) as strategy:
        result = fit(build(mlp(args.hidden, args.dropout), seed=0), splits.train, splits.validation, splits.test,
                     epochs=args.epochs, batch_size=args.batch_size, learning_rate=3e-3,
                     schedule={"type": "cosine", "warmup_epochs": 1}, early_stopping={"patience": 5},
                     metrics=["accuracy", "f1"], preprocessing=Standardize(per_feature=False), progress=False,
                     deterministic=True, device="cpu", checkpoint=checkpoint, strategy=strategy,
                     callbacks=[KillAt(args.kill_at_step, args.sleep)])
        seconds = time.perf_counter() - started
        history = [{k: v for k, v in record.items() if k != "time"} for record in result.history.records]
        seen = {"history": history, "test": result.test_metrics, "rank": strategy.rank}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{strategy.rank}.json").write_text(json.dumps(seen))
        if strategy.is_coordinator:
            weights = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
            write_tensors(args.out / "weights.safetensors", weights, {"step": "final"})
            (args.out / "result.json").write_text(json.dumps({
                **seen, "resumed_from": result.resumed_from, "world_size": strategy.world_size,
                "seconds": seconds, "steps": sum(1 for _ in history) and None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
