"""Kill a checkpointing training run at random moments, resume it each time, demand bit-identical weights.

    python scripts/torture_resume.py --kills 200          # the long torture (a benchmark)
    python scripts/torture_resume.py --kills 10 --json    # what the CI test runs

The run is ``tests/checkpoint_train_script.py`` (a deterministic MLP on
sklearn's digits that checkpoints asynchronously every few steps). Each life
of the run is a subprocess: it is started (resuming from the newest good
checkpoint), allowed to train for a random time after it reports ``ready``,
then SIGKILLed, wherever it is: mid-step, mid-save, mid-rename, mid-retention.
When a life finishes on its own, its final weights are compared bit for bit
with an uninterrupted run and a new round starts in a fresh folder, until
``--kills`` kills have been made. Kills that left a temporary file behind
(proof that they landed inside a save) are counted.

``--fork`` starts each life with ``fork()`` from a process that has already
imported torch (and runs its training with one thread), which saves the
interpreter start-up per life; the CI test uses it. Saves skip fsync by default: a SIGKILL cannot lose what is in the page cache,
only a power cut can, so fsync only slows the torture down (``--durable`` puts it back).
Later this will drive ``modelkeep train --resume``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "checkpoint_train_script.py"


@dataclass
class Result:
    kills: int = 0
    kills_inside_saves: int = 0   # a temporary checkpoint file was left behind by the kill
    rounds_finished: int = 0
    rounds_identical: int = 0
    lives: int = 0
    resumed_steps: list[int] = field(default_factory=list)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.rounds_finished == self.rounds_identical and self.rounds_finished > 0


class _ForkedLife:
    """A life started with fork() from this process (torch already imported): the same kill, no start-up cost."""

    def __init__(self, argv: list[str]) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: train, then leave without running the parent's exit handlers
            code = 1
            try:
                os.close(read_end)
                os.dup2(write_end, 1)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                from checkpoint_train_script import main as train_main

                code = train_main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write_end)
        self.stdout = os.fdopen(read_end, "r")
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.stdout.close()
                return self.returncode
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("forked life", timeout)
            time.sleep(0.005)

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return "", ""


def _life(directory: Path, data: Path, args: list[str], out: Path | None, fork: bool = False):
    if fork:
        return _ForkedLife([str(directory), "--data", str(data), *args] + (["--out", str(out)] if out else []))
    command = [sys.executable, str(SCRIPT), str(directory), "--data", str(data), *args]
    if out is not None:
        command += ["--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def torture(kills: int, *, seed: int = 0, every: int = 2, epochs: int = 4, hidden: int = 1024,
            max_delay: float = 0.6, step_sleep: float = 0.004, durable: bool = False, fork: bool = False, work: Path | None = None,
            log=lambda message: None) -> Result:
    """Make ``kills`` SIGKILLs of the training run; return the tally (``Result.ok`` when every round matched)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    import torch
    from checkpoint_train_script import Config, load_data, run

    from modelkeep.artifact.tensors import read_tensors
    from modelkeep.checkpoint.atomic import TEMP_MARKER

    chooser = random.Random(seed)
    started = time.perf_counter()
    result = Result()
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="modelkeep-torture-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    try:
        x, y = load_data()
        data = work / "digits.npz"
        np.savez(data, x=(x * 16.0).numpy(), y=y.numpy())
        reference = run(work / "reference", Config(epochs=epochs, hidden=hidden, every=every, asynchronous=True,
                                                   durable=False), load_data(str(data)))
        flags = ["--epochs", str(epochs), "--hidden", str(hidden), "--every", str(every), "--async",
                 "--step-sleep", str(step_sleep)]
        if not durable:
            flags.append("--no-durable")
        round_number = 0
        while result.kills < kills:
            round_number += 1
            directory, out = work / f"round-{round_number}", work / f"final-{round_number}.safetensors"
            while True:
                process = _life(directory, data, flags, out, fork)
                result.lives += 1
                line = process.stdout.readline()
                if not line.startswith("ready"):
                    process.kill()
                    result.failures.append(f"round {round_number}: did not start: {line}")
                    return result
                fields = dict(item.split("=") for item in line.split()[1:])
                result.resumed_steps.append(int(fields["step"]))
                if result.kills < kills and int(fields["step"]) < int(fields["total"]):
                    try:
                        process.wait(timeout=chooser.uniform(0.0, max_delay))
                    except subprocess.TimeoutExpired:
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        result.kills += 1
                        leftovers = [p for p in directory.glob(f"*{TEMP_MARKER}*")] if directory.exists() else []
                        result.kills_inside_saves += bool(leftovers)
                        log(f"kill {result.kills}: after resuming at step {result.resumed_steps[-1]}"
                            + (" (inside a save)" if leftovers else ""))
                        continue
                _, stderr = process.communicate(timeout=300)
                if process.returncode != 0:
                    result.failures.append(f"round {round_number}: exit status {process.returncode}: {stderr[-2000:]}")
                    return result
                break
            result.rounds_finished += 1
            final = read_tensors(out)
            identical = set(final) == set(reference) and all(torch.equal(final[k], reference[k]) for k in final)
            result.rounds_identical += identical
            if not identical:
                result.failures.append(f"round {round_number}: final weights differ from the uninterrupted run")
            log(f"round {round_number} finished: {'bit-identical' if identical else 'DIFFERENT'}")
    finally:
        result.seconds = round(time.perf_counter() - started, 1)
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=2, help="checkpoint every N steps")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--step-sleep", type=float, default=0.004, help="seconds each step sleeps (a slower run)")
    parser.add_argument("--max-delay", type=float, default=0.6, help="longest life after 'ready', in seconds")
    parser.add_argument("--durable", action="store_true", help="fsync every checkpoint")
    parser.add_argument("--work", type=Path, help="keep the runs in this folder")
    parser.add_argument("--json", action="store_true", help="print the tally as JSON")
    parser.add_argument("--fork", action="store_true",
                        help="start each life with fork() instead of a fresh interpreter (no import cost; POSIX)")
    args = parser.parse_args(argv)
    result = torture(args.kills, seed=args.seed, every=args.every, epochs=args.epochs, hidden=args.hidden,
                     max_delay=args.max_delay, step_sleep=args.step_sleep, durable=args.durable, fork=args.fork, work=args.work,
                     log=(lambda m: None) if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        print(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    else:
        print(f"{result.kills} kills ({result.kills_inside_saves} inside a save), {result.lives} lives, "
              f"{result.rounds_identical}/{result.rounds_finished} rounds bit-identical, {result.seconds} s")
        for failure in result.failures:
            print("FAILURE:", failure)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
