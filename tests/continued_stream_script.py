"""An incremental update over a replayable generator, for the kill-and-resume test
(tests/train/test_continued_stream.py).

    python tests/continued_stream_script.py PARENT CHECKPOINT_DIR OUT --batches 12 --every 2 [--sleep 0.2]

Batch ``i`` is a pure function of ``i`` (seeded), so the generator made again yields the same stream: the
contract ``update_stream`` documents. ``--sleep`` slows the stream so a test can kill it mid-way.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from task_specs import multiclass_data  # noqa: E402


def batches(count: int, sleep: float):
    for index in range(count):
        if sleep:
            time.sleep(sleep)
        yield multiclass_data(np.random.default_rng(1000 + index), 32)


def main(argv: list[str] | None = None) -> int:
    from modelkeep import save
    from modelkeep.train.incremental import update_stream

    parser = argparse.ArgumentParser()
    parser.add_argument("parent")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = update_stream(args.parent, batches(args.batches, args.sleep), checkpoint=args.checkpoint,
                           every=args.every, learning_rate=0.01,
                           on_batch=lambda done, loss: print(f"batch {done}", flush=True))
    save(result, args.out, optimizer=result.optimizer, reproducible=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
