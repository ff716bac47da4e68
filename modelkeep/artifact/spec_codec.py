"""The ``spec`` architecture: the network as data (a ``ModelSpec``), rebuilt without running any code.

Document: ``{"type": "spec", "spec": {...}}`` (docs/format.md, 3.1). The spec
layer is imported only inside the methods (``inspect`` of a class file never
pays for it); torch only in ``decode``.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError, FormatError, ModelkeepError, SpecError
from .architecture import Description, Rebuilt, stored_values
from .format import Header


def spec_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``spec`` object of a spec architecture document."""
    if document.get("type") != "spec" or not isinstance(document.get("spec"), dict):
        raise FormatError(
            f"this file's architecture is of type {str(document.get('type'))[:40]!r}; only 'spec' architectures can "
            "be rebuilt without code"
        )
    return document["spec"]


def spec_of(document: Mapping[str, Any], where: object = "the file") -> Any:
    """The ``ModelSpec`` of a spec architecture; anything wrong with it is a ``FormatError``."""
    from ..spec.model import ModelSpec

    data = spec_document(document)
    try:
        return ModelSpec.from_dict(data)
    except ModelkeepError as exc:
        raise FormatError(f"{where}: the architecture in the file is invalid: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        # The spec is untrusted data; a spec parser that trips on it is still the file's fault.
        raise FormatError(
            f"{where}: the architecture in the file is invalid ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def output_units(spec: Any) -> int | None:
    """The width of the spec's first output (its last axis), or ``None`` for a scalar output."""
    shape = tuple(spec.output_shape)
    return int(shape[-1]) if shape else None


def spec_signature(spec: Any) -> dict[str, Any]:
    """Names, dtypes and shapes (batch axis ``None``) of a spec's inputs and outputs, as the manifest records them."""
    def entry(name: str, dtype: str = "float32") -> dict[str, Any]:
        return {"name": name, "dtype": dtype, "shape": [None, *spec.shapes[name]]}

    return {
        "inputs": [entry(layer.name, getattr(layer.kind.fields, "dtype", "float32")) for layer in spec.inputs],
        "outputs": [entry(name) for name in spec.outputs],
    }


class SpecCodec:
    """``{"type": "spec", "spec": ...}``: encode a spec-built module, rebuild it on the meta device."""

    kind = "spec"

    def encode(self, model: Any, *, spec: Any = None, init: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if init is not None:
            raise ConfigError("init= is for user-defined classes; a spec-built model is rebuilt from its spec alone")
        spec = spec if spec is not None else getattr(model, "spec", None)
        if spec is None or not hasattr(spec, "to_dict"):
            raise SpecError(f"spec= must be a ModelSpec, got {type(spec).__name__}")
        return {"type": "spec", "spec": spec.to_dict()}

    def decode(self, document: Mapping[str, Any], *, where: object, trust_code: bool = False,
               model_class: type | None = None) -> Rebuilt:
        spec = spec_of(document, where)
        import torch

        from ..nn import SpecModule

        with torch.device("meta"):
            module = SpecModule(spec)
        return Rebuilt(module, on_meta=True, spec=spec, final_activation=spec.final_activation(),
                       output_units=output_units(spec), signature=spec_signature(spec))

    def describe(self, document: Mapping[str, Any], header: Header) -> Description:
        from ..spec.params import count_parameters

        spec = spec_of(document, header.path)
        report = count_parameters(spec)
        stored = stored_values(header)
        if stored != report.total + report.buffers:
            raise FormatError(
                f"{header.path}: the architecture needs {report.total:,} parameters and {report.buffers:,} buffer "
                f"values but the file stores {stored:,} values; the file is corrupt or was tampered with"
            )
        summary = {"type": "spec", "name": spec.name, "layers": len(spec.layers),
                   "input_shape": list(spec.input_shape), "output_shape": list(spec.output_shape)}
        return Description(summary, [row.to_dict() for row in report.layers], report.total, report.trainable)


__all__ = ["SpecCodec", "output_units", "spec_document", "spec_of", "spec_signature"]
