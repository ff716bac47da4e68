"""Kill a checkpointing training run at random moments, resume it each time, demand bit-identical weights.

    python scripts/torture_resume.py --kills 200                      # the long torture (a benchmark)
    python scripts/torture_resume.py --kills 10 --json                # what the CI test runs
    python scripts/torture_resume.py --target cli --kills 100         # the real `modelkeep train` command
    python scripts/torture_resume.py --target cli --fork --kills 200  # the same code, lives forked

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

``--target cli`` drives the real command instead: each life is ``modelkeep train
CONFIG --run-dir DIR --quiet`` (a small MLP with dropout on digits, cosine schedule
with warm-up, early stopping with best-weight restore, deterministic, on CPU,
asynchronous checkpoints every ``--every`` steps), killed at a random moment from
its start (interpreter start-up, restore, training, saves, the final test and model
file), and started again with the same command. A round passes when the final
``model.safetensors`` holds tensors bit-identical to an uninterrupted run's and its
history matches too (the ``time`` column aside). With ``--fork`` each life is a
fork of this process calling ``modelkeep.cli.main.main(argv)``: the same code,
without the interpreter and import start-up.
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
    kills_without_progress: int = 0  # cli: the kill came before the life wrote a new checkpoint
    reference_seconds: float = 0.0   # cli: how long one uninterrupted life takes
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.rounds_finished == self.rounds_identical and self.rounds_finished > 0


def _live_and_exit(life) -> None:
    """In a forked child: run ``life()`` and leave with its exit code, never running the parent's exit handlers."""
    code = 1
    try:
        code = life()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _ForkedLife:
    """A life started with fork() from this process (torch already imported): the same kill, no start-up cost."""

    def __init__(self, argv: list[str]) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: train, then leave without running the parent's exit handlers
            def life() -> int:
                os.close(read_end)
                os.dup2(write_end, 1)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                from checkpoint_train_script import main as train_main

                return train_main(argv)

            _live_and_exit(life)
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
                if self.stdout is not None:
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


# --------------------------------------------------------------------------- --target cli

CLI_CONFIG = """\
name: torture
model:
  name: torture_mlp
  layers:
    - {{kind: Input, name: image, shape: [1, 8, 8]}}
    - {{kind: Flatten, name: flatten}}
    - {{kind: Dense, name: hidden, units: {hidden}, activation: relu}}
    - {{kind: Dropout, name: dropout, rate: 0.2}}
    - {{kind: Dense, name: logits, units: 10}}
data: {{name: digits, split: [0.8, 0.1, 0.1]}}
preprocessing: {{type: standardize, per_feature: false}}
optimizer: adam
learning_rate: 0.002
schedule: {{type: cosine, warmup_epochs: 1}}
epochs: {epochs}
batch_size: 32
early_stopping: {{monitor: val_loss, patience: 2, restore_best_weights: true}}
deterministic: true
device: cpu
seed: 0
checkpoint: {{every_steps: {every}, every_epochs: 1, keep_last: 2, keep_best: 1, asynchronous: true, durable: {durable}}}
"""


def _cli_env() -> dict[str, str]:
    # One intra-op thread in every life and in the reference, so they all compute alike (and forks are safe).
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class _ForkedCliLife(_ForkedLife):
    """``modelkeep train`` run by ``main(argv)`` in a fork of this process (torch and modelkeep already imported)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.pid = os.fork()
        if self.pid == 0:
            def life() -> int:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                import torch

                torch.set_num_threads(1)
                from modelkeep.cli.main import main as cli_main

                return cli_main(argv)

            _live_and_exit(life)
        self.stdout = None
        self.returncode = None
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class _CliLife:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as handle:
            self.process = subprocess.Popen([sys.executable, "-m", "modelkeep", *argv], stdout=handle,
                                            stderr=subprocess.STDOUT, env=_cli_env(), cwd=str(log.parent))
        self.pid = self.process.pid

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _newest_step(folder: Path) -> int:
    from modelkeep.checkpoint.storage import step_of

    if not folder.is_dir():
        return 0
    return max((step_of(p.name) or 0 for p in folder.iterdir()), default=0)


def _final_state(run_dir: Path):
    from modelkeep.artifact.tensors import read_tensors

    history = json.loads((run_dir / "history.json").read_text())
    history.pop("time", None)
    return read_tensors(run_dir / "model.safetensors"), history


def torture_cli(kills: int, *, seed: int = 0, every: int = 3, epochs: int = 4, hidden: int = 512,
                max_delay: float | None = None, focus: float = 0.75, durable: bool = False, fork: bool = False,
                work: Path | None = None, log=lambda message: None) -> Result:
    """``torture`` for the real ``modelkeep train`` command (see the module docstring)."""
    import torch

    from modelkeep.io.atomic import TEMP_MARKER

    if fork:
        torch.set_num_threads(1)  # before any fork: the lives inherit a single-threaded torch
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401  (imported once here, not in every life: the curves)
        import sklearn.datasets  # noqa: F401  (the digits)

        import modelkeep.cli.main  # noqa: F401
        import modelkeep.train.config  # noqa: F401
        import modelkeep.train.fit  # noqa: F401
    chooser = random.Random(seed)
    started = time.perf_counter()
    result = Result()
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="modelkeep-torture-cli-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)

    def life(run_dir: Path, tag: str):
        argv = ["train", str(config), "--run-dir", str(run_dir), "--quiet"]
        log_path = work / f"{tag}.log"
        return _ForkedCliLife(argv, log_path) if fork else _CliLife(argv, log_path)

    try:
        config = work / "torture.yaml"
        config.write_text(CLI_CONFIG.format(hidden=hidden, epochs=epochs, every=every,
                                            durable="true" if durable else "false"))
        if fork:  # one run in this process first: every lazy import and one-time set-up is then inherited
            import contextlib
            import io

            from modelkeep.cli.main import main as cli_main

            with contextlib.redirect_stdout(io.StringIO()):
                cli_main(["train", str(config), "--run-dir", str(work / "warm-up"), "--quiet"])
        clock = time.perf_counter()
        reference_life = life(work / "reference", "reference")
        # Watch the reference's checkpoints appear: when training starts and ends within a life, and its pace.
        seen: dict[int, float] = {}
        while reference_life.returncode is None:
            try:
                reference_life.wait(timeout=0.003)
            except subprocess.TimeoutExpired:
                pass
            step = _newest_step(work / "reference" / "checkpoints")
            if step and step not in seen:
                seen[step] = time.perf_counter() - clock
        if reference_life.returncode != 0 or len(seen) < 2:
            result.failures.append(f"the uninterrupted run failed: {reference_life.output()[-2000:]}")
            return result
        result.reference_seconds = round(time.perf_counter() - clock, 2)
        reference = _final_state(work / "reference")
        (first_step, first_at), (total_steps, last_at) = min(seen.items()), max(seen.items())
        step_seconds = (last_at - first_at) / max(1, total_steps - first_step)
        training_starts = max(0.0, first_at - first_step * step_seconds)
        longest = max_delay if max_delay is not None else 1.15 * result.reference_seconds

        def kill_delay(step: int) -> float:
            # Most kills aim at the training this life has left (its steps and saves); the rest anywhere in
            # the life: start-up, restore, the final test, the model file and history being written.
            if chooser.random() < focus and step < total_steps:
                return training_starts + chooser.uniform(0.0, (total_steps - step) * step_seconds)
            return chooser.uniform(0.0, longest)

        log(f"uninterrupted run: {result.reference_seconds} s, training from {training_starts:.2f} s to "
            f"{last_at:.2f} s ({total_steps} steps); kills aim at the training {focus:.0%} of the time")
        round_number = 0
        while result.kills < kills:
            round_number += 1
            run_dir = work / f"round-{round_number}"
            while True:
                before = _newest_step(run_dir / "checkpoints")
                process = life(run_dir, f"round-{round_number}-life-{result.lives}")
                result.lives += 1
                result.resumed_steps.append(before)
                if result.kills < kills:
                    try:
                        process.wait(timeout=kill_delay(before))
                    except subprocess.TimeoutExpired:
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        result.kills += 1
                        leftovers = [p for folder in (run_dir, run_dir / "checkpoints") if folder.is_dir()
                                     for p in folder.glob(f"*{TEMP_MARKER}*")]
                        result.kills_inside_saves += bool(leftovers)
                        after = _newest_step(run_dir / "checkpoints")
                        result.kills_without_progress += after <= before
                        log(f"kill {result.kills}: life started at step {before}, newest checkpoint now {after}"
                            + (" (inside a save)" if leftovers else ""))
                        continue
                code = process.wait(timeout=600)
                if code != 0:
                    result.failures.append(f"round {round_number}: exit status {code}: {process.output()[-2000:]}")
                    return result
                break
            result.rounds_finished += 1
            final, history = _final_state(run_dir)
            identical = (set(final) == set(reference[0]) and all(torch.equal(final[k], reference[0][k]) for k in final)
                         and history == reference[1])
            result.rounds_identical += identical
            if not identical:
                result.failures.append(f"round {round_number}: final weights or history differ from the "
                                       "uninterrupted run")
            log(f"round {round_number} finished: {'bit-identical' if identical else 'DIFFERENT'}")
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        result.seconds = round(time.perf_counter() - started, 1)
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return result


def torture(kills: int, *, seed: int = 0, every: int = 2, epochs: int = 4, hidden: int = 1024,
            max_delay: float = 0.6, step_sleep: float = 0.004, durable: bool = False, fork: bool = False, work: Path | None = None,
            log=lambda message: None) -> Result:
    """Make ``kills`` SIGKILLs of the training run; return the tally (``Result.ok`` when every round matched)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import numpy as np
    import torch
    from checkpoint_train_script import Config, load_data, run

    from modelkeep.artifact.tensors import read_tensors
    from modelkeep.io.atomic import TEMP_MARKER

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
    parser.add_argument("--target", choices=["script", "cli"], default="script",
                        help="the private training script (default) or the real `modelkeep train` command")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, help="checkpoint every N steps (default 2; cli: 3)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, help="hidden units (default 1024; cli: 512)")
    parser.add_argument("--step-sleep", type=float, default=0.004, help="seconds each step sleeps (a slower run)")
    parser.add_argument("--max-delay", type=float,
                        help="longest life after 'ready', in seconds (default 0.6; cli: 1.15 x an uninterrupted run)")
    parser.add_argument("--durable", action="store_true", help="fsync every checkpoint")
    parser.add_argument("--focus", type=float, default=0.75,
                        help="cli: share of kills aimed at the training left in a life (the rest: anywhere)")
    parser.add_argument("--work", type=Path, help="keep the runs in this folder")
    parser.add_argument("--json", action="store_true", help="print the tally as JSON")
    parser.add_argument("--fork", action="store_true",
                        help="start each life with fork() instead of a fresh interpreter (no import cost; POSIX)")
    args = parser.parse_args(argv)
    log = (lambda m: None) if args.json else (lambda m: print(m, flush=True))
    if args.target == "cli":
        result = torture_cli(args.kills, seed=args.seed, every=args.every or 3, epochs=args.epochs,
                             hidden=args.hidden or 512, max_delay=args.max_delay, focus=args.focus,
                             durable=args.durable,
                             fork=args.fork, work=args.work, log=log)
    else:
        result = torture(args.kills, seed=args.seed, every=args.every or 2, epochs=args.epochs,
                         hidden=args.hidden or 1024, max_delay=args.max_delay if args.max_delay is not None else 0.6,
                         step_sleep=args.step_sleep, durable=args.durable, fork=args.fork, work=args.work, log=log)
    if args.json:
        print(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    else:
        print(f"{result.kills} kills ({result.kills_inside_saves} inside a save"
              + (f", {result.kills_without_progress} before a new checkpoint" if args.target == "cli" else "")
              + f"), {result.lives} lives, {result.rounds_identical}/{result.rounds_finished} rounds bit-identical, "
              f"{result.seconds} s")
        for failure in result.failures:
            print("FAILURE:", failure)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
