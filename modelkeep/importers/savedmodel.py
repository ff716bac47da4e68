"""TensorFlow SavedModel folders written by tf.keras (Keras 2): the Keras architecture and weights, no TensorFlow.

A Keras 2 ``model.save("dir")`` writes ``saved_model.pb`` (TensorFlow graphs, never read here),
``keras_metadata.pb`` (one JSON document per Keras object; the root's holds the model config, as in a
``.keras`` file) and ``variables/`` (a tensor bundle, read by ``tf_bundle``). The bundle names variables by
their path in the object graph (``layer_with_weights-1/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE``); its
``_CHECKPOINTABLE_OBJECT_GRAPH`` entry gives each object's children in the order they were tracked, which for
Keras layers is the order the weights were created, i.e. ``layer.get_weights()`` order. Each layer found under
the root is named by its own ``keras_metadata.pb`` entry, and the config and weights go to the Keras converter.

TensorFlow before 2.5 kept the same metadata inside ``saved_model.pb`` (each Keras object's ``user_object``);
that is read when ``keras_metadata.pb`` is absent, decoding only the object graph of the file.

Never runs anything from the folder: no graph is executed, no Python object is rebuilt. A SavedModel without
Keras metadata (Keras 3 ``model.export()``, ``tf.saved_model.save``) holds its architecture only as a
TensorFlow graph and is refused with what to do instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError
from . import _protowire as wire
from .base import Imported, register_reader
from .tf_bundle import OBJECT_GRAPH_KEY, BundleReader

MAX_METADATA_BYTES = 64 << 20
MAX_SAVED_MODEL_BYTES = 512 << 20   # graphs with embedded constants can be large; only the object graph is kept
MAX_GRAPH_DEPTH = 32
_MODEL_IDENTIFIERS = ("_tf_keras_sequential", "_tf_keras_network", "_tf_keras_model")
_VARIABLE_ATTRIBUTE = "VARIABLE_VALUE"


@dataclass
class MetadataNode:
    """One entry of ``keras_metadata.pb``: where the object is in the object graph and its JSON description."""

    path: str           # "root", "root.layer_with_weights-0", "root.layer_with_weights-1.cell", ...
    identifier: str     # "_tf_keras_sequential", "_tf_keras_layer", "_tf_keras_rnn_layer", ...
    metadata: str       # JSON text
    node_id: int = -1   # its node in the object graph


@dataclass
class GraphNode:
    """One object of the checkpoint's object graph: its named children and the checkpoint keys it owns."""

    children: list[tuple[str, int]] = field(default_factory=list)
    variable_keys: list[str] = field(default_factory=list)


def _bounded_bytes(path: Path, cap: int) -> bytes:
    size = path.stat().st_size
    if size > cap:
        raise FormatError(f"{path.name} is {size} bytes, over the {cap}-byte cap; refusing it")
    return path.read_bytes()


def read_keras_metadata(folder: Path) -> list[MetadataNode]:
    """The Keras metadata of a SavedModel: ``keras_metadata.pb`` (TensorFlow 2.5 and later) or, before that, the
    user objects of ``saved_model.pb``; refused when neither holds any."""
    path = folder / "keras_metadata.pb"
    if not path.is_file():
        nodes = read_legacy_metadata(folder / "saved_model.pb")
        if any(node.metadata for node in nodes):
            return nodes
        origin = ("a tf.keras model written by tf.saved_model.save instead of model.save" if nodes else
                  "written by Keras 3 model.export() or tf.saved_model.save")
        raise FormatError(
            f"{folder.name}: this SavedModel has no keras_metadata.pb, so no Keras model config ({origin}); its "
            "architecture exists only as a TensorFlow graph, which modelkeep does not run. In the program that made "
            "it, save the Keras model as a .keras file (model.save('model.keras')) and import that; see "
            "docs/interop.md")
    what = path.name
    nodes = []
    for raw in wire.messages(wire.decode(_bounded_bytes(path, MAX_METADATA_BYTES), what), 1, what):
        fields = wire.decode(raw, what)
        nodes.append(MetadataNode(path=wire.text(fields, 3, what), identifier=wire.text(fields, 4, what),
                                  metadata=wire.text(fields, 5, what), node_id=wire.integer(fields, 2, what)))
    return nodes


def read_legacy_metadata(path: Path) -> list[MetadataNode]:
    """Keras metadata as TensorFlow before 2.5 kept it: ``SavedModel.meta_graphs[0].object_graph_def``, whose
    node ``i`` is node ``i`` of the checkpoint's object graph, each Keras object a ``user_object`` holding its
    identifier and JSON. Paths are made as tf.keras makes them: ``root`` plus the first name reaching a node."""
    what = path.name
    model = wire.decode(_bounded_bytes(path, MAX_SAVED_MODEL_BYTES), what, only=frozenset({2}))
    meta_graphs = wire.messages(model, 2, what)
    if not meta_graphs:
        return []
    object_graph = wire.first(wire.decode(meta_graphs[0], what, only=frozenset({7})), 7, b"")
    listed = wire.messages(wire.decode(object_graph, what, only=frozenset({1})), 1, what)  # type: ignore[arg-type]
    objects = [wire.decode(raw, what, only=frozenset({1, 4})) for raw in listed]
    paths, stack = {0: "root"}, [0]
    while stack and objects:
        node = stack.pop()
        for child in wire.messages(objects[node], 1, what):
            ref = wire.decode(child, what)
            target = wire.integer(ref, 1, what)
            if 0 <= target < len(objects) and target not in paths:
                paths[target] = f"{paths[node]}.{wire.text(ref, 2, what)}"
                stack.append(target)
    nodes = []
    for node_id, fields in enumerate(objects):
        user = wire.first(fields, 4, b"")
        if node_id in paths and user:
            user_fields = wire.decode(user, what)   # type: ignore[arg-type]
            identifier = wire.text(user_fields, 1, what)
            if identifier.startswith("_tf_keras"):
                nodes.append(MetadataNode(path=paths[node_id], identifier=identifier,
                                          metadata=wire.text(user_fields, 3, what), node_id=node_id))
    return nodes


def plain_json(value: Any, depth: int = 0) -> Any:
    """Undo the SavedModel metadata's JSON encodings, giving the config as a ``.keras``/``.h5`` file holds it.

    tf.keras writes tuples as ``{"class_name": "__tuple__", "items": [...]}``, shapes as
    ``{"class_name": "TensorShape", "items": [...]}`` and bytes as ``{"class_name": "__bytes__", "value": ...}``;
    those become plain lists and strings. Anything else stays as it is (the converter judges it).
    """
    if depth > 64:
        raise FormatError("the Keras metadata is nested more than 64 levels deep; refusing it")
    if isinstance(value, list):
        return [plain_json(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get("class_name")
    if tag in ("__tuple__", "TensorShape") and set(value) == {"class_name", "items"}:
        return plain_json(value["items"], depth + 1)
    if tag == "__bytes__" and set(value) == {"class_name", "value"}:
        return value["value"]
    return {key: plain_json(item, depth + 1) for key, item in value.items()}


def keras_model_config(nodes: list[MetadataNode], where: str) -> dict[str, Any]:
    """The Keras model config ``{"class_name": ..., "config": ...}`` held by the root's metadata."""
    from ..artifact.format import loads_bounded

    root = next((node for node in nodes if node.path == "root"), None)
    if root is None:
        raise FormatError(f"{where}: keras_metadata.pb has no entry for the root object; the folder is damaged")
    document = loads_bounded(root.metadata, f"{where}: the model's Keras metadata")
    if not isinstance(document, dict):
        raise FormatError(f"{where}: the model's Keras metadata is not a JSON object; the folder is damaged")
    class_name = document.get("class_name")
    if root.identifier not in _MODEL_IDENTIFIERS or not isinstance(document.get("config"), dict):
        raise FormatError(
            f"{where}: the saved object is a {str(class_name or root.identifier)[:80]!r} without a Keras model "
            "config (a subclassed model is Python code, not a config); rebuild it as a Sequential or functional "
            "model, or import its weights into a spec of the same network")
    return {"class_name": class_name, "config": plain_json(document["config"]),
            "keras_version": str(document.get("keras_version", ""))[:40]}


def read_object_graph(bundle: BundleReader) -> list[GraphNode]:
    """The checkpoint's ``TrackableObjectGraph``: node 0 is the saved model itself."""
    what = f"{OBJECT_GRAPH_KEY} of {bundle.prefix.name}"
    if OBJECT_GRAPH_KEY not in bundle.entries:
        raise FormatError(f"{bundle.prefix.name}: the variables carry no object graph; not a TF2 SavedModel")
    if bundle.entries[OBJECT_GRAPH_KEY].size > MAX_METADATA_BYTES:
        raise FormatError(f"{what} declares {bundle.entries[OBJECT_GRAPH_KEY].size} bytes, over the "
                          f"{MAX_METADATA_BYTES}-byte cap; refusing it")
    serialized = bundle.read_strings(OBJECT_GRAPH_KEY)
    if len(serialized) != 1:
        raise FormatError(f"{what} holds {len(serialized)} strings instead of one; the folder is damaged")
    nodes = []
    for raw in wire.messages(wire.decode(serialized[0], what), 1, what):
        fields = wire.decode(raw, what)
        node = GraphNode()
        for child in wire.messages(fields, 1, what):
            ref = wire.decode(child, what)
            node.children.append((wire.text(ref, 2, what), wire.integer(ref, 1, what)))
        for attribute in wire.messages(fields, 2, what):
            tensor = wire.decode(attribute, what)
            if wire.text(tensor, 1, what) == _VARIABLE_ATTRIBUTE:
                node.variable_keys.append(wire.text(tensor, 3, what))
        nodes.append(node)
    for node in nodes:
        if any(not 0 <= child < len(nodes) for _, child in node.children):
            raise FormatError(f"{what}: a child refers to a node that does not exist; the folder is damaged")
    if not nodes:
        raise FormatError(f"{what} is empty; the folder is damaged")
    return nodes


def variables_under(graph: list[GraphNode], node_id: int) -> list[str]:
    """Checkpoint keys of the variables of ``node_id`` and its descendants, in tracking order (depth first).

    Random-number generators are skipped: their state (a seed) is tracked like a variable but is no weight.
    """
    keys: list[str] = []
    seen: set[int] = set()

    def visit(node: int, depth: int) -> None:
        if node in seen or depth > MAX_GRAPH_DEPTH:
            return
        seen.add(node)
        keys.extend(graph[node].variable_keys)
        for name, child in graph[node].children:
            if "random_generator" not in name:
                visit(child, depth + 1)

    visit(node_id, 0)
    return keys


def _node_at(graph: list[GraphNode], path: str) -> int | None:
    node = 0
    for name in path.split(".")[1:]:
        node = next((child for local, child in graph[node].children if local == name), -1)
        if node < 0:
            return None
    return node


def layer_weight_keys(graph: list[GraphNode], nodes: list[MetadataNode], where: str) -> dict[str, list[str]]:
    """Keras layer name -> checkpoint keys of its weights, in ``get_weights`` order, for the root's layers."""
    from ..artifact.format import loads_bounded

    out: dict[str, list[str]] = {}
    for meta in nodes:
        if meta.path.count(".") != 1 or not meta.path.startswith("root.layer"):
            continue
        node = _node_at(graph, meta.path)
        if node is None:
            raise FormatError(f"{where}: the layer at {meta.path[:100]!r} is not in the variables' object graph")
        document = loads_bounded(meta.metadata, f"{where}: the Keras metadata of {meta.path[:100]}")
        name = document.get("name") if isinstance(document, dict) else None
        if not isinstance(name, str):
            raise FormatError(f"{where}: the Keras metadata of {meta.path[:100]!r} names no layer")
        keys = variables_under(graph, node)
        if keys and name not in out:
            out[name] = keys
    return out


class SavedModelReader:
    """A TensorFlow SavedModel folder whose architecture is a Keras 2 Sequential or functional model."""

    format = "tf-savedmodel"
    description = "a TensorFlow SavedModel folder written by tf.keras (Keras 2) model.save('dir')"

    def sniff(self, path: Path, head: bytes) -> bool:
        return path.is_dir() and (path / "saved_model.pb").is_file() and (path / "variables/variables.index").is_file()

    def read(self, path: Path, limits: Any) -> Imported:
        from ..data.limits import resolve_limits

        folder = Path(path)
        where = folder.name
        nodes = read_keras_metadata(folder)
        config = keras_model_config(nodes, where)
        bundle = BundleReader(folder / "variables" / "variables", resolve_limits(limits))
        graph = read_object_graph(bundle)
        keys = layer_weight_keys(graph, nodes, where)
        arrays: dict[str, Any] = {}   # a variable shared by layers is read (and allocated) once
        for key in (key for layer_keys in keys.values() for key in layer_keys if key not in arrays):
            arrays[key] = bundle.read(key)
        weights = {name: [arrays[key] for key in layer_keys] for name, layer_keys in keys.items()}
        left = sorted(key for key in bundle.entries if key not in arrays and key != OBJECT_GRAPH_KEY)
        details = {"container": "tf-keras SavedModel", "keras_version": config.pop("keras_version"),
                   "variables": len(arrays), "skipped_variables": len(left)}
        from .keras.convert import keras_to_imported  # config + weights -> spec + tensors

        imported = keras_to_imported(config, weights, format=self.format, details=details)
        if left:
            shown = ", ".join(key.split("/.ATTRIBUTES")[0] for key in left[:4])
            imported.notes.append(f"left out {len(left)} variables that are not layer weights "
                                  f"(optimizer state, counters): {shown}{', ...' if len(left) > 4 else ''}")
        return imported


register_reader(SavedModelReader())

__all__ = ["SavedModelReader", "keras_model_config", "layer_weight_keys", "read_keras_metadata",
           "read_object_graph", "variables_under"]
