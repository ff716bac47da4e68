"""What imported weights are matched onto: a spec, a zoo model (in one of its known layouts) or a user's class.

``resolve_target`` builds the module the weights go into, from exactly one of: the file's own
architecture (Keras, Hugging Face), ``spec=``, ``zoo=`` (with overrides) or ``model_class=``
(a class, or a ``"module:Class"`` reference imported only with ``trust_code=True``, as ``load``
does). ``fit_weights`` then tries every candidate naming of the source tensors: the explicit
mapping, each wrapper prefix (``module.``, ``_orig_mod.``, ``model.``) and, for a zoo model,
each registered ``Layout`` of another library plus modelkeep's own names; the one under which
the most tensors fit by name and shape wins.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..artifact.keymap import KeyMatch, apply_mapping, compare, shapes_of, strip_prefix, wrapper_prefixes
from ..errors import ConfigError, FormatError, TrustError
from .layouts import LAYOUTS, Layout, layouts_for
from .layouts import text, vision  # noqa: F401  (register the layouts of the zoo's text and image models)

OWN_LAYOUT = "modelkeep"  # the zoo spec's own names: no conversion


@dataclass
class Target:
    """The module the weights go into, and what ``save`` needs to describe it."""

    module: Any
    spec: Any = None            # a ModelSpec, or None for a user class
    init: dict[str, Any] | None = None
    zoo: str | None = None      # the zoo model's name, when layouts apply
    description: str = ""       # for the report: "zoo resnet18", "spec mlp", "class pkg.mod:Net"
    on_meta: bool = False       # built on the meta device: the weights are assigned, not copied
    rebuild: Callable[[], Any] | None = None  # the module built for real (initialised), for a partial fit

    def fill(self, state: Mapping[str, Any], whole: bool) -> None:
        """Put ``state`` into the module: assigned when it covers every tensor (``whole``), else copied into a
        module initialised for real, so that what the file lacks keeps its initialisation."""
        if self.on_meta and whole:
            import torch

            reference = self.module.state_dict()
            self.module.load_state_dict({n: t.to(reference[n].dtype) for n, t in state.items()}, assign=True)
            tensors = (*self.module.parameters(), *self.module.buffers())
            if not any(t.is_meta for t in tensors) and all(t.device == torch.device("cpu") for t in tensors):
                return
        if self.on_meta:
            self.module, self.on_meta = self.rebuild(), False
        self.module.load_state_dict(dict(state), strict=False)


@dataclass
class Fit:
    """The winning naming: the state (target names -> tensors) and how it was reached."""

    match: KeyMatch
    state: dict[str, Any]
    layout: str | None = None


def resolve_target(imported: Any, *, spec: Any, zoo: str | None, model_class: Any, init: Mapping[str, Any] | None,
                   trust_code: bool, overrides: Mapping[str, Any], where: object) -> Target:
    """The module to load the weights into; ``ConfigError`` when none (or several) is named."""
    given = [name for name, value in (("spec", spec), ("zoo", zoo), ("model_class", model_class)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give one target for the weights, not {' and '.join(given)}")
    if overrides and not (zoo or isinstance(spec, str)):
        raise ConfigError(f"the options {sorted(overrides)} are zoo model (or spec file) overrides; pass them with "
                          "zoo=NAME (for a class, give its constructor arguments as init={...})")
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if init is not None and model_class is None:
        raise ConfigError("init= gives a class's constructor arguments; it goes with model_class=")
    if model_class is not None:
        return _class_target(model_class, init, trust_code, where)
    if spec is None and zoo is None:
        if imported.spec is None:
            raise ConfigError(
                f"{where} holds weights only ({imported.format}), not the network they belong to: say which with "
                "spec=<spec file or ModelSpec>, zoo=<zoo model name> or model_class=<your nn.Module class>")
        return _spec_target(imported.spec, None, "the file's own architecture")
    from ..spec import load_spec
    from ..zoo import ZOO, resolve_spec

    if zoo is not None:
        name = ZOO.canonical(str(zoo))
        return _spec_target(resolve_spec(name, overrides=dict(overrides)), name, f"zoo {name}")
    if isinstance(spec, str):
        resolved = resolve_spec(spec, overrides=dict(overrides))
        is_zoo = spec in ZOO and not _is_file(spec)
        return _spec_target(resolved, ZOO.canonical(spec) if is_zoo else None, f"spec {spec}")
    resolved = load_spec(spec if not hasattr(spec, "__fspath__") else str(spec))
    return _spec_target(resolved, None, f"spec {resolved.name or ''}".strip())


def _is_file(text: str) -> bool:
    from pathlib import Path

    return Path(text).is_file()


def _spec_target(spec: Any, zoo: str | None, description: str) -> Target:
    import torch

    from ..nn import build

    with torch.device("meta"):  # no memory and no initialisation until the weights are known not to cover it
        module = build(spec)
    return Target(module, spec=spec, zoo=zoo, description=description, on_meta=True,
                  rebuild=lambda: build(spec, seed=0))


def _class_target(model_class: Any, init: Mapping[str, Any] | None, trust_code: bool, where: object) -> Target:
    from ..artifact.class_codec import CLASS_REFERENCE, construct, resolve_class

    if isinstance(model_class, str):
        if not CLASS_REFERENCE.match(model_class):
            raise ConfigError(f"a class is named 'package.module:ClassName', got {model_class[:80]!r}")
        if not trust_code:
            raise TrustError(
                f"model_class={model_class!r} names a class by reference: importing its module "
                f"{model_class.split(':')[0]!r} runs that module's code, which modelkeep does only when you allow it: "
                "pass trust_code=True if you trust that code, or pass the class itself (model_class=YourClass)")
        cls = resolve_class(model_class, where, trust_code, None)
        reference = model_class
    else:
        cls = resolve_class("", where, trust_code, model_class)
        reference = f"{cls.__module__}:{cls.__qualname__}"
    arguments = dict(init or {})
    module, on_meta = construct(cls, arguments, where)
    return Target(module, init=arguments, description=f"class {reference}", on_meta=on_meta,
                  rebuild=lambda: construct(cls, arguments, where, meta=False)[0])


def candidate_layouts(zoo: str | None, layout: str | None) -> list[Layout | None]:
    """The layouts to try: the named one, else (for a zoo model) modelkeep's own names and every registered one."""
    if layout is not None:
        if layout.lower() in (OWN_LAYOUT, "identity"):
            return [None]
        if zoo is None:
            raise ConfigError(f"layout {layout!r} names another library's weight names for a zoo model; give zoo=NAME "
                              "(layouts: " + (", ".join(LAYOUTS.names()) or "none registered") + ")")
        key = layout if ":" in layout else f"{zoo}:{layout}"
        return [LAYOUTS.get(key.lower())]
    if zoo is None:
        return [None]
    # torchvision first: where two libraries name a model alike (timm's ResNets), the report names the common one
    return [None, *sorted(layouts_for(zoo), key=lambda known: (known.source != "torchvision", known.source))]


def fit_weights(tensors: Mapping[str, Any], target: Mapping[str, Any], *, mapping: Mapping[str, str],
                layouts: list[Layout | None]) -> Fit:
    """The naming of ``tensors`` under which most of them fit ``target`` (name -> tensor of the module)."""
    target_shapes = shapes_of(target)
    renamed = {new: tensors[old] for new, old in apply_mapping(tensors, mapping).items()}
    best: Fit | None = None
    errors: list[str] = []
    for prefix in wrapper_prefixes(renamed):
        names = strip_prefix({name: name for name in renamed}, prefix)
        state = {name: renamed[source] for name, source in names.items()}
        for layout in layouts:
            converted = state
            if layout is not None:
                try:
                    converted = dict(layout.convert(state))
                except Exception as exc:  # noqa: BLE001 - a layout that does not fit these names is skipped
                    errors.append(f"{layout.key}: {type(exc).__name__}: {str(exc)[:120]}")
                    continue
            match = compare({name: name for name in converted}, shapes_of(converted), target_shapes, prefix)
            if best is None or match.score() > best.match.score():
                best = Fit(match, converted, layout.key if layout is not None else None)
            if match.complete:  # the first naming under which everything fits: no need to convert more
                return best
    if best is None:
        raise FormatError("no layout fits the file's tensors: " + "; ".join(errors[:4]))
    return best


__all__ = ["Fit", "OWN_LAYOUT", "Target", "candidate_layouts", "fit_weights", "resolve_target"]
