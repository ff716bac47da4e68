"""One process of the sharded-checkpoint tests (run as a script, never collected by pytest).

    python sharded_worker.py MODE RANK WORLD PORT CHECKPOINTS OUT

MODE ``save``: train DIGITS_CNN under FSDP2 (``fully_shard``, gloo on loopback) for ``SAVE_AT`` steps, save a
sharded checkpoint (model + Adam state through ``get_state_dict``), write the full state as rank 0 gathers it
to ``OUT/reference.safetensors``, then train on to ``END`` and write the global losses to ``OUT/losses-save.json``.
MODE ``load-damaged``: resume from a damaged checkpoint; each rank writes the ``IntegrityError`` it gets to
``OUT/refused-<RANK>.txt``.
MODE ``load``: build a differently initialised model with another learning rate, resume from the checkpoint
on WORLD processes (WORLD == 1: one process without a process group), write the full state it now holds to
``OUT/loaded-<WORLD>.safetensors`` and the losses of the same steps to ``OUT/losses-<WORLD>.json``.
Every step uses the same global batch whatever the world size; each rank takes its equal slice.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

SAVE_AT, END, GLOBAL_BATCH = 3, 6, 12


def batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (GLOBAL_BATCH,), generator=generator)
    per_rank = GLOBAL_BATCH // world
    return x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]


def train(model, optimizer, steps: range, rank: int, world: int, distributed: bool) -> list[float]:
    losses = []
    model.eval()  # no dropout: its masks depend on each rank's random state, so the curve would too
    for step in steps:
        x, y = batch(step, rank, world)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        value = loss.detach().clone()
        if distributed:
            dist.all_reduce(value)
            value /= world
        losses.append(float(value))
    return losses


def full_state(model, optimizer) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from modelkeep.checkpoint.sharded import split_state

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    tensors, _, _ = split_state({"model": model_sd, "optim": optim_sd})
    return {key: tensor.contiguous() for key, tensor in tensors.items()}


def main() -> None:
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from modelkeep.checkpoint import manifest_pieces
    from modelkeep.checkpoint.sharded import load_sharded, save_sharded
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN

    mode, rank, world, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    checkpoints, out = Path(sys.argv[5]), Path(sys.argv[6])
    torch.set_num_threads(1)
    distributed = not (mode == "load" and world == 1)
    model = build(DIGITS_CNN, seed=0 if mode == "save" else 1)
    if distributed:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2 if mode == "save" else 0.5)
    if mode == "save":
        pieces = manifest_pieces(build(DIGITS_CNN, seed=0), labels=[str(i) for i in range(10)])
        train(model, optimizer, range(SAVE_AT), rank, world, distributed)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        document = {"position": {"epoch": 0, "batch": SAVE_AT, "step": SAVE_AT}, "extra_manifest": pieces,
                    "metrics": {"loss": 1.5}}
        save_sharded(checkpoints, SAVE_AT, {"model": model_sd, "optim": optim_sd}, document, keep=2)
        reference = full_state(model, optimizer)
        if rank == 0:
            save_file(reference, str(out / "reference.safetensors"))
        name = "save"
    elif mode == "load-damaged":  # every rank must get the modelkeep error, not DCP's wrapper or a hang
        from modelkeep.errors import IntegrityError

        model_sd, optim_sd = get_state_dict(model, optimizer)
        try:
            load_sharded(checkpoints, {"model": model_sd, "optim": optim_sd})
        except IntegrityError as exc:
            (out / f"refused-{rank}.txt").write_text(str(exc))
        dist.barrier()
        dist.destroy_process_group()
        return
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        document = load_sharded(checkpoints, {"model": model_sd, "optim": optim_sd})
        assert document["position"]["step"] == SAVE_AT, document
        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
        loaded = full_state(model, optimizer)
        if rank == 0:
            save_file(loaded, str(out / f"loaded-{world}.safetensors"))
        name = str(world)
    losses = train(model, optimizer, range(SAVE_AT, END), rank, world, distributed)
    if rank == 0:
        (out / f"losses-{name}.json").write_text(json.dumps(losses))
    if distributed:
        dist.barrier()  # leave together: a rank tearing gloo down mid-collective can abort the other at exit
        dist.destroy_process_group()


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- helpers the tests import

_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}


def pickle_streams(data: bytes) -> list[int]:
    """Offsets in ``data`` where a pickle stream starts (protocol 2-5 header, a complete opcode stream to STOP
    that imports or calls something: what torch.save and DCP's ``.metadata`` hold), and of zip headers
    (torch.save's container). Random tensor bytes may hold a ``\\x80\\x02`` pair; they never parse this far."""
    import io
    import pickletools

    stream = io.BytesIO(data)
    found = [index for index in range(len(data)) if data.startswith(b"PK\x03\x04", index)]
    start = data.find(b"\x80")
    while start != -1:
        if start + 1 < len(data) and 2 <= data[start + 1] <= 5:
            stream.seek(start)
            try:
                names = {opcode.name for opcode, _, _ in pickletools.genops(stream)}
                if names & _CODE_OPCODES:
                    found.append(start)
            except Exception:
                pass
        start = data.find(b"\x80", start + 1)
    return found


def folder_pickles(folder: Path) -> dict[str, list[int]]:
    """``{file: offsets}`` of the pickle streams in every file under ``folder``."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (offsets := pickle_streams(path.read_bytes())):
            found[str(path.relative_to(folder))] = offsets
    return found
