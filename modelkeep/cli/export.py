"""``modelkeep export FILE OUT [--format onnx|state-dict|keras|hf|triton]``: a model to another runtime or framework.

``onnx`` is ``modelkeep.export_onnx`` (checked in onnxruntime; the maximum absolute difference is printed,
and the export fails, writing nothing, above ``--tolerance``); ``state-dict`` is
``modelkeep.export_state_dict``; ``keras`` is ``modelkeep.export.to_keras.export_keras``; ``hf`` is
``modelkeep.export.hf.export_hf`` (OUT is a folder: model.safetensors, config.json, README.md); ``triton`` is
``modelkeep.export.triton.export_triton`` (OUT is a Triton model repository: NAME/config.pbtxt, NAME/1/model.onnx,
checked in onnxruntime as for ``onnx``). Without
``--format``, OUT's extension chooses (``.onnx``, ``.pt``/``.pth``, ``.keras``). ``--data`` is read as
``modelkeep evaluate --data`` reads it (a dataset name, a CSV, .npy/.npz file or image folder).
"""
from __future__ import annotations

import argparse

from ._options import TRUST_CODE, add_trust_code, naming_flags

FORMATS = {"onnx": (".onnx",), "state-dict": (".pt", ".pth", ".bin"), "keras": (".keras",), "hf": (), "triton": ()}
# The flags of the ONNX export that also shape the ONNX file of a Triton model; the rest are --format onnx's alone.
SHARED_WITH_TRITON = ("--opset", "--tolerance", "--quantize", "--data")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a model to ONNX (checked in onnxruntime), a plain "
                                                "PyTorch state dict, a Keras file, a Hugging Face-style folder or "
                                                "a Triton/KServe model repository")
    parser.add_argument("file", metavar="FILE", help="a modelkeep model file")
    parser.add_argument("out", metavar="OUT", help="the file to write (a folder for --format hf; the model "
                                                   "repository for --format triton)")
    parser.add_argument("--format", choices=sorted(FORMATS),
                        help="what to write (default: from OUT's extension: .onnx, .pt/.pth, .keras; hf only by name)")
    parser.add_argument("--opset", type=_whole, help="ONNX opset version (default: the exporter's, 20 here)")
    parser.add_argument("--tolerance", type=_non_negative, default=None,
                        help="largest difference allowed between onnxruntime's outputs and the model's (default "
                             "1e-4, relative for outputs larger than 1)")
    parser.add_argument("--no-check", action="store_true", help="skip the parity check in onnxruntime")
    parser.add_argument("--quantize", choices=["int8"], help="write an int8 model (onnxruntime quantization); with "
                                                             "--data holding targets, the accuracy change is reported")
    parser.add_argument("--data", metavar="DATA",
                        help="real inputs for the check (and targets for the int8 accuracy): a dataset name, a "
                             "CSV/.npy/.npz file or an image folder")
    parser.add_argument("--static-batch", action="store_true", help="fix the ONNX batch axis at 1 row")
    parser.add_argument("--probabilities", action="store_true",
                        help="add an ONNX output 'probabilities' equal to what predict reports (by default only "
                             "the raw outputs, with the post-processing recorded in the file's metadata)")
    parser.add_argument("--json", action="store_true", help="print what was written and measured as JSON")
    _add_triton_flags(parser)
    add_trust_code(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    chosen = args.format or _format_of(args.out)
    _refuse_foreign_flags(args, chosen)
    with naming_flags(TRUST_CODE):
        if chosen == "onnx":
            return _onnx(args)
        if chosen == "triton":
            return _triton(args)
        if chosen == "state-dict":
            from ..export.state_dict import export_state_dict

            path = export_state_dict(args.file, args.out, trust_code=args.trust_code)
        elif chosen == "hf":
            from ..export.hf import export_hf

            path = export_hf(args.file, args.out)
        else:
            path = _keras(args)
    _report(args, {"path": str(path), "format": chosen}, [f"wrote {path} ({chosen})"])
    return 0


def _add_triton_flags(parser: argparse.ArgumentParser) -> None:
    triton = parser.add_argument_group("--format triton (a Triton/KServe model repository)")
    triton.add_argument("--name", help="the model's name: its folder in OUT and /v2/models/NAME (default: FILE's stem)")
    triton.add_argument("--model-version", type=_whole, metavar="N", help="the version folder (default 1)")
    triton.add_argument("--max-batch-size", type=_whole_or_zero, metavar="N",
                        help="most rows Triton runs together (default 32; 0: Triton does not batch)")
    triton.add_argument("--max-queue-delay-us", type=_whole_or_zero, metavar="US",
                        help="how long a request waits for others to batch with (default 0, as modelkeep serve)")
    triton.add_argument("--preferred-batch-size", type=_whole, action="append", metavar="N",
                        help="a batch size Triton aims for (repeatable)")
    triton.add_argument("--instance-count", type=_whole, metavar="N", help="copies of the model Triton runs (default 1)")
    triton.add_argument("--instance-kind", choices=["cpu", "gpu", "auto"], help="where they run (default cpu)")


def _refuse_foreign_flags(args: argparse.Namespace, chosen: str) -> None:
    """Flags of one format given to another are refused, not silently ignored."""
    from ..errors import ConfigError

    onnx = {"--opset": args.opset is not None, "--tolerance": args.tolerance is not None,
            "--no-check": args.no_check, "--quantize": args.quantize, "--data": args.data,
            "--static-batch": args.static_batch, "--probabilities": args.probabilities}
    triton = {f"--{key.replace('_', '-')}": getattr(args, key) is not None
              for key in ("name", "model_version", "max_batch_size", "max_queue_delay_us", "preferred_batch_size",
                          "instance_count", "instance_kind")}
    allowed = {"onnx": set(onnx), "triton": {*triton, *SHARED_WITH_TRITON}}.get(chosen, set())
    foreign = [flag for flag, present in {**onnx, **triton}.items() if present and flag not in allowed]
    if not foreign:
        return
    if foreign[0] in triton:
        owner = "--format triton only"
    elif chosen != "triton" and all(flag in SHARED_WITH_TRITON for flag in foreign):
        owner = "--format onnx only (and to the ONNX file of --format triton)"
    else:
        owner = "--format onnx only"
    why = (" (the Triton export is always checked, batches on its first axis and adds probabilities for a "
           "classifier)" if chosen == "triton" else "")
    raise ConfigError(f"{', '.join(foreign)} apply to {owner}, not to {chosen}{why}")


def _onnx(args: argparse.Namespace) -> int:
    from ..export.onnx import DEFAULT_TOLERANCE, export_onnx

    result = export_onnx(args.file, args.out, opset=args.opset, dynamic_batch=not args.static_batch,
                         check=not args.no_check, data=args.data, quantize=args.quantize,
                         tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
                         probabilities=args.probabilities, trust_code=args.trust_code)
    _report(args, result.to_dict(), result.summary())
    return 0


def _triton(args: argparse.Namespace) -> int:
    from ..export.triton import export_triton

    given = {"name": args.name, "version": args.model_version, "max_batch_size": args.max_batch_size,
             "max_queue_delay_us": args.max_queue_delay_us, "preferred_batch_sizes": args.preferred_batch_size,
             "instance_count": args.instance_count, "kind": args.instance_kind, "tolerance": args.tolerance}
    result = export_triton(args.file, args.out, opset=args.opset, data=args.data, quantize=args.quantize,
                           trust_code=args.trust_code, **{k: v for k, v in given.items() if v is not None})
    _report(args, result.to_dict(), result.summary())
    return 0


def _keras(args: argparse.Namespace):
    from ..artifact import load

    try:
        from ..export.to_keras import export_keras
    except ImportError as exc:
        from ..errors import ExportError

        raise ExportError(f"Keras export is not available in this installation ({exc})") from None
    return export_keras(load(args.file, trust_code=args.trust_code), args.out)


def _report(args: argparse.Namespace, document: dict, lines: list[str]) -> None:
    from ._output import print_json, printable

    if args.json:
        print_json(document)
        return
    for line in lines:  # plain lines, never wrapped: scripts grep for "max abs diff"
        print(printable(line))


def _format_of(out: str) -> str:
    from ..errors import ConfigError

    name = out.lower()
    for chosen, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return chosen
    raise ConfigError(f"cannot tell the format from {out!r}: give --format onnx, state-dict, keras, hf or triton (or "
                      "name the file .onnx, .pt or .keras)")


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {text!r}")
    return int(text)


def _whole_or_zero(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a whole number of at least 0, got {text!r}")
    return int(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a finite number >= 0, got {text!r}")
    return value
