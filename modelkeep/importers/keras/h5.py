"""Legacy Keras HDF5 files (``model.save("m.h5")``, Keras 2 and 3), read with h5py and bounded.

The architecture is the root attribute ``model_config`` (JSON); the weights are
the group ``model_weights``: its attribute ``layer_names`` lists the layers,
each layer group's ``weight_names`` its arrays in Keras's order. Every dataset's
declared shape is checked against ``ReaderLimits.max_elements`` and its stored
size (a chunked, compressed dataset may expand) before it is read; a file
holding only weights is refused, since an architecture is needed.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import FormatError, ModelkeepError
from ..base import Imported, register_reader

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG_CHARS = 64 * 1024 * 1024
MAX_NAMES = 100_000


@dataclass
class WeightBudget:
    """How many more elements the arrays of one file may hold in all (each is also capped by ``max_elements``)."""

    limits: Any
    left: int = 0

    def __post_init__(self) -> None:
        self.left = self.limits.max_elements * 16


def read_dataset(dataset: Any, budget: WeightBudget, what: str) -> Any:
    """One h5py dataset as a NumPy array, its declared shape and stored size checked before anything is read."""
    import h5py
    import numpy as np

    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(f"{what} is not an array in the HDF5 file; the file is corrupt")
    if dataset.external or dataset.is_virtual:
        raise FormatError(f"{what} keeps its numbers in other files (external or virtual storage); modelkeep reads "
                          "nothing outside the file it was given")
    if dataset.dtype.kind not in "fiub" or dataset.dtype.itemsize > 8:
        raise FormatError(f"{what} holds {dataset.dtype} values, not numbers; the file is corrupt")
    shape = dataset.shape or ()
    if shape is None or any(d < 0 for d in shape):
        raise FormatError(f"{what} has no valid shape; the file is corrupt")
    elements = int(np.prod(shape, dtype=object)) if shape else 1
    if elements > budget.limits.max_elements or elements > budget.left:
        raise FormatError(f"{what} declares shape {list(shape)[:8]} ({elements:,} numbers); the limit is "
                          f"{min(budget.limits.max_elements, budget.left):,} (ReaderLimits.max_elements): refused "
                          "unread")
    nbytes = elements * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if nbytes > stored and nbytes > budget.limits.expansion_cap(stored):
        raise FormatError(f"{what} would expand from {stored:,} stored bytes to {nbytes:,}; over the limit "
                          "(ReaderLimits.max_compression_ratio): refused unread")
    budget.left -= elements
    return dataset[()]


def child(group: Any, path: str, what: str) -> Any:
    """``group[path]``, refusing links to other files (an HDF5 external link could name any file on disk)."""
    import h5py

    node = group
    for part in path.split("/"):
        if not part:
            continue
        if part not in node:
            raise FormatError(f"{what} is listed but missing; the file is corrupt")
        if isinstance(node.get(part, getlink=True), h5py.ExternalLink):
            raise FormatError(f"{what} links to another file; modelkeep reads nothing outside the file it was given")
        node = node[part]
    return node


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8 text; the file is corrupt") from None
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
        value = value.decode("utf-8") if isinstance(value, bytes) else value
    if not isinstance(value, str):
        raise FormatError(f"{what} is not text; the file is corrupt")
    if len(value) > MAX_CONFIG_CHARS:
        raise FormatError(f"{what} holds {len(value):,} characters; the limit is {MAX_CONFIG_CHARS:,}")
    return value


def _names(group: Any, attribute: str, what: str) -> list[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``), bounded."""
    attr = group.attrs.get_id(attribute) if attribute in group.attrs else None
    if attr is None:
        return []
    if attr.shape is None or len(attr.shape) != 1 or attr.shape[0] > MAX_NAMES:
        raise FormatError(f"{what} attribute {attribute!r} is not a list of at most {MAX_NAMES:,} names")
    return [_text(n, f"{what} {attribute!r}") for n in group.attrs[attribute]]


def _attribute(group: Any, name: str) -> str | None:
    if name not in group.attrs:
        return None
    attr = group.attrs.get_id(name)
    if attr.shape not in ((), None) and attr.shape != (1,):
        raise FormatError(f"attribute {name!r} is not one text value; the file is corrupt")
    return _text(group.attrs[name], f"attribute {name!r}")


def legacy_weights(root: Any, budget: WeightBudget, nested: dict[str, set[str]] | None = None) -> dict[str, list[Any]]:
    """Layer name -> arrays, from a ``model_weights`` group (or a Keras 2 weights-only root).

    A nested model's group holds the weights of all its layers, named ``<layer>/<weight>``
    (the first component that names one of its layers says whose: ``nested`` lists them).
    """
    weights: dict[str, list[Any]] = {}
    for layer in _names(root, "layer_names", "the weights group"):
        group = child(root, layer, f"the weights of layer {layer!r}")
        inner = (nested or {}).get(layer)
        for w in _names(group, "weight_names", f"layer {layer!r}"):
            owner = layer if inner is None else next((part for part in w.split("/") if part in inner), None)
            if owner is None:
                raise FormatError(f"weight {w!r} of the nested model {layer!r} names none of its layers")
            where = f"weight {w!r} of layer {layer!r}"
            array = read_dataset(child(group, w, where), budget, where)
            weights.setdefault(owner, []).append(array)
    return weights


@contextmanager
def h5_errors(name: str) -> Iterator[None]:
    """h5py's own errors on a damaged file (``OSError``, ``KeyError``, ...) as ``FormatError``."""
    try:
        yield
    except ModelkeepError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise FormatError(f"{name} is damaged: HDF5 could not read it ({type(exc).__name__}: {str(exc)[:120]})") from None


def looks_like_keras_h5(path: Path) -> bool:
    """An HDF5 file with Keras's marks: a model config, layer names, or a Keras 3 weights layout."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "layer_names" in f.attrs or "model_weights" in f or (
                "layers" in f and "vars" in f)
    except (OSError, ValueError):
        return False


def _compiled_loss(training_config: str | None) -> str | None:
    """The loss in a legacy file's ``training_config`` (it tells regression from classification); None if unreadable."""
    from ...artifact.format import loads_bounded
    from .convert import loss_name

    try:
        parsed = loads_bounded(training_config, "the Keras training_config") if training_config else None
    except FormatError:
        return None   # training settings are not needed to predict
    return loss_name(parsed.get("loss")) if isinstance(parsed, dict) else None


def read_keras_h5(path: Path, limits: Any) -> Imported:
    import h5py

    from ...artifact.format import loads_bounded
    from .config import nested_models
    from .convert import keras_to_imported

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path.name} is not a readable HDF5 file ({str(exc)[:120]})") from None
    with f, h5_errors(path.name):
        text = _attribute(f, "model_config")
        if text is None:
            raise FormatError(f"{path.name} holds Keras weights only, no architecture (model.save_weights); "
                              "modelkeep needs the architecture: save the whole model (model.save('m.keras')) or "
                              "import the weights onto a spec with --spec")
        config = loads_bounded(text, "the Keras model_config")
        version = _attribute(f, "keras_version") or ""
        loss = _compiled_loss(_attribute(f, "training_config"))
        backend = _attribute(f, "backend") or ""
        root = child(f, "model_weights", "the group model_weights") if "model_weights" in f else f
        weights = legacy_weights(root, WeightBudget(limits), nested_models(config))
    details = {"keras_version": version, "backend": backend, **({"loss": loss} if loss else {})}
    return keras_to_imported(config, weights, format="keras-h5", details=details)


class KerasH5Reader:
    format = "keras-h5"
    description = "Keras HDF5 model (.h5/.hdf5, Keras 2 or 3 model.save): architecture and weights"

    def sniff(self, path: Path, head: bytes) -> bool:
        return path.is_file() and head.startswith(HDF5_MAGIC) and looks_like_keras_h5(path)

    def read(self, path: Path, limits: Any) -> Imported:
        from ...data.limits import resolve_limits

        return read_keras_h5(Path(path), resolve_limits(limits))


register_reader(KerasH5Reader())
