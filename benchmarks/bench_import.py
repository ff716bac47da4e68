"""import: ``modelkeep.import_model`` of a 100M-parameter PyTorch state dict against ``torch.load`` of it.

The file is what a user brings: ``torch.save`` of a plain state dict, here a GPT-2-shaped decoder from the zoo
(width 768, 9 layers, the 50,257-token vocabulary: 103M parameters, 413 MB in float32; ``--quick``: one layer,
width 256, 10k vocabulary: 3.5M). Three cases, side by side:

* ``torch.load(weights_only=True)``: reading the file, nothing more (the floor);
* ``torch.load + build + load_state_dict``: what a PyTorch user does to get a working model;
* ``modelkeep import_model``: recognising the file from its content, reading it with ``weights_only``,
  matching every key and shape onto the zoo spec, and writing a durable modelkeep file (fsync included).

The ratios are against ``torch.load``.
"""
from __future__ import annotations

import torch

from ._harness import Case, Context, Report, Row, interleave, remove

NAME = "import"
DESCRIPTION = "import_model of a 100M-parameter torch.save state dict vs torch.load(weights_only=True) of it"

FULL = {"d_model": 768, "n_layer": 9, "n_head": 12, "vocab_size": 50257, "context": 1024}
QUICK = {"d_model": 256, "n_layer": 1, "n_head": 4, "vocab_size": 10000, "context": 512}


def run(ctx: Context) -> Report:
    from modelkeep import import_model
    from modelkeep.export.state_dict import state_dict_of
    from modelkeep.nn import build
    from modelkeep.spec import count_parameters
    from modelkeep.zoo import get_spec

    config = QUICK if ctx.quick else FULL
    spec = get_spec("gpt2", **config)
    parameters = count_parameters(spec).total
    folder = ctx.subdir(NAME)
    source = folder / "model.pt"
    ctx.log(f"building a GPT-2-shaped decoder {config} ({parameters:,} parameters) and torch.save-ing it")
    module = build(spec, seed=0)
    torch.save(state_dict_of(module), source)
    del module
    nbytes = source.stat().st_size
    target = folder / "imported.safetensors"

    def plain_load(_state):
        return torch.load(source, weights_only=True, mmap=False)

    def load_into_model(_state):
        model = build(spec, seed=0)
        model.load_state_dict(torch.load(source, weights_only=True, mmap=False), strict=True)
        return model

    def modelkeep_import(_state):
        return import_model(source, target, spec=spec, strict=True)

    cases = [Case("torch.load(weights_only=True)", plain_load),
             Case("torch.load + build + load_state_dict", load_into_model),
             Case("modelkeep import_model (durable write)", modelkeep_import,
                  setup=lambda: remove(target), teardown=lambda state, result: remove(target))]
    ctx.log(f"{len(cases)} cases x {ctx.reps} reps (+1 warm-up) on a {nbytes / 1e6:.0f} MB file")
    timings = interleave(cases, ctx.reps)
    reference = cases[0].name
    rows = [Row("import a torch.save state dict", case.name, timings[case.name], nbytes,
                ref=reference if case.name != reference else None) for case in cases]
    info = {"parameters": f"{parameters:,}", "file": f"{nbytes / 1e6:.1f} MB"}
    report = Report(NAME, f"Import of a {parameters / 1e6:.0f}M-parameter PyTorch file vs torch.load", rows, info=info)
    report.notes.append("import_model also matches every key and shape onto the spec and writes a new file durably")
    remove(source)
    return report
