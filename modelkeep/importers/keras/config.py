"""A Keras model config (Keras 2 or 3, Sequential or functional) as a plain graph, refusing what would run code.

Keras rebuilds a model by importing the classes and functions its config
names; modelkeep never does. So before anything else, every object the config
names is checked: ``Lambda`` layers (Python code, often as marshalled
bytecode), objects from a ``module`` outside Keras's own, and objects
registered by a package (``registered_name`` such as ``"Custom>MyLayer"``)
are refused with a ``TrustError`` naming the layer. Nothing here imports
Keras or TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError, TrustError

MAX_LAYERS = 10_000
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}
_SCALAR_OPERATIONS = {"Add", "Multiply", "Subtract", "Divide", "TrueDivide"}
# objects that carry Python code in their config, whatever module they claim
_CODE_CLASSES = {"Lambda", "__lambda__", "function", "__function__"}


@dataclass
class KerasNode:
    """One Keras layer of the model: its name, class, config and the layers whose outputs it reads."""

    name: str
    class_name: str
    config: dict[str, Any]
    inputs: list[str] = field(default_factory=list)


@dataclass
class KerasGraph:
    name: str
    nodes: list[KerasNode]
    inputs: list[str]
    outputs: list[str]


def _is_keras_module(module: str) -> bool:
    return module in ("keras", "tf_keras", "tensorflow.keras") or module.startswith(
        ("keras.", "tf_keras.", "tensorflow.keras.", "tensorflow.python.keras."))


def check_trust(entry: Any, layer: str, depth: int = 0) -> None:
    """Refuse (``TrustError``) any object in ``entry`` that Keras would build by running code not its own."""
    if depth > 64:
        raise FormatError(f"the config of layer {layer!r} is nested more than 64 levels deep; refusing it")
    if isinstance(entry, list):
        for item in entry:
            check_trust(item, layer, depth + 1)
        return
    if not isinstance(entry, dict):
        return
    class_name = entry.get("class_name")
    module = entry.get("module")
    registered = entry.get("registered_name")
    if class_name in _CODE_CLASSES and not (class_name == "function" and _is_keras_module(str(module or ""))):
        raise TrustError(
            f"layer {layer!r} holds a {class_name} (Python code that Keras would run when loading); modelkeep never "
            "runs code from a file: rebuild the model without it (a Lambda can become a built-in layer)"
        )
    if module is not None and not (isinstance(module, str) and _is_keras_module(module)):
        raise TrustError(
            f"layer {layer!r} names {str(class_name)[:60]!r} from module {str(module)[:80]!r}, which is not Keras's "
            "own: loading it would import and run that code, which modelkeep never does"
        )
    if registered is not None and (not isinstance(registered, str) or ">" in registered):
        raise TrustError(
            f"layer {layer!r} uses the custom object {str(registered)[:80]!r} (registered by user code); modelkeep "
            "cannot run custom code: rebuild the model from built-in Keras layers"
        )
    for value in entry.values():
        check_trust(value, layer, depth + 1)


def _layer_name(entry: dict[str, Any], index: int) -> str:
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
    if not isinstance(name, str) or not name:
        raise FormatError(f"layer {index} of the Keras config has no name; the file is corrupt")
    return name


def _check_entry(entry: Any, index: int) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise FormatError(f"layer {index} of the Keras config is not an object with a 'class_name'; the file is corrupt")
    name = _layer_name(entry, index)
    if entry["class_name"] in _MODEL_CLASSES:  # a nested model: its layers are checked one by one when inlined
        check_trust({k: v for k, v in entry.items() if k != "config"}, name)
    else:
        check_trust(entry, name)
    config = entry.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"layer {name!r} of the Keras config has no 'config' object; the file is corrupt")
    return name, entry["class_name"], config


def _inline(name: str, class_name: str, config: dict[str, Any], inputs: list[str],
            depth: int) -> tuple[list[KerasNode], str]:
    """A nested model's layers, reading ``inputs`` where it read its own inputs, and the name of its output."""
    inner = parse_model_config({"class_name": class_name, "config": config}, _depth=depth + 1)
    if len(inner.inputs) != len(inputs) or len(inner.outputs) != 1:
        raise FormatError(f"the nested model {name!r} has {len(inner.inputs)} input(s) and {len(inner.outputs)} "
                          f"output(s), called with {len(inputs)}; modelkeep inlines nested models of one output")
    alias = dict(zip(inner.inputs, inputs))
    nodes = [node for node in inner.nodes if node.name not in alias]
    for node in nodes:
        node.inputs = [alias.get(source, source) for source in node.inputs]
    return nodes, alias.get(inner.outputs[0], inner.outputs[0])


def nested_models(model_config: Any, depth: int = 0) -> dict[str, set[str]]:
    """Nested model name -> the names of every layer inside it (at any depth): how legacy .h5 files group weights."""
    found: dict[str, set[str]] = {}
    layers = (model_config.get("config") or {}).get("layers") if isinstance(model_config, dict) else None
    if depth > 8 or not isinstance(layers, list):
        return found
    for index, entry in enumerate(layers):
        if isinstance(entry, dict) and entry.get("class_name") in _MODEL_CLASSES:
            inner = nested_models(entry, depth + 1)
            names = {_layer_name(e, i) for i, e in enumerate(entry["config"].get("layers", []))
                     if isinstance(e, dict) and e.get("class_name") not in _MODEL_CLASSES}
            found[_layer_name(entry, index)] = names.union(*inner.values())
            found.update(inner)
    return found


def _input_from(config: dict[str, Any], entry: dict[str, Any]) -> KerasNode | None:
    """The InputLayer a Sequential model implies when its first layer carries the input shape (Keras 2, 3)."""
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if shape is None and isinstance(entry.get("build_config"), dict):
        shape = entry["build_config"].get("input_shape")
    if shape is None:
        return None
    return KerasNode("input", "InputLayer", {"batch_shape": shape, "dtype": config.get("dtype", "float32")})


def _sequential(config: Any, depth: int) -> KerasGraph:
    layers = config.get("layers") if isinstance(config, dict) else config  # Keras < 2.2.3: a bare list
    if not isinstance(layers, list) or not layers:
        raise FormatError("the Keras Sequential config has no 'layers' list; the file is corrupt")
    nodes: list[KerasNode] = []
    previous = ""
    for index, entry in enumerate(layers[:MAX_LAYERS + 1]):
        name, class_name, layer_config = _check_entry(entry, index)
        if not nodes and class_name != "InputLayer":
            implied = _input_from(layer_config, entry)
            if implied is None and isinstance(config, dict) and config.get("build_input_shape"):
                implied = KerasNode("input", "InputLayer", {"batch_shape": config["build_input_shape"]})
            if implied is None and class_name in _MODEL_CLASSES:
                implied = _input_from((layer_config.get("layers") or [{}])[0].get("config") or {}, {})
            if implied is None:
                raise FormatError("the Keras Sequential model was saved without an input shape; build it with an "
                                  "Input (or call it once) before saving")
            nodes.append(implied)
            previous = implied.name
        if class_name in _MODEL_CLASSES:
            inner, previous = _inline(name, class_name, layer_config, [previous], depth)
            nodes.extend(inner)
            continue
        nodes.append(KerasNode(name, class_name, layer_config, [previous] if nodes else []))
        previous = name
    if len(nodes) > MAX_LAYERS:
        raise FormatError(f"the Keras model has more than {MAX_LAYERS} layers; refusing it")
    return KerasGraph(str(config.get("name", "model")) if isinstance(config, dict) else "model",
                      nodes, [nodes[0].name], [previous])


def _history(value: Any, found: list[tuple[str, int, int]], depth: int = 0) -> None:
    """Every ``keras_history`` (Keras 3) in a node's call arguments, in order."""
    if depth > 32:
        raise FormatError("a Keras node's arguments are nested too deeply; the file is corrupt")
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            if not isinstance(history, list) or len(history) != 3:
                raise FormatError("a Keras tensor in the config has no valid keras_history; the file is corrupt")
            found.append((history[0], history[1], history[2]))
            return
        for item in value.values():
            _history(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _history(item, found, depth + 1)


def _node_inputs(name: str, inbound: Any) -> list[str]:
    if not isinstance(inbound, list):
        raise FormatError(f"layer {name!r} has no valid 'inbound_nodes'; the file is corrupt")
    if len(inbound) > 1:
        raise FormatError(f"layer {name!r} is called {len(inbound)} times (a shared layer); modelkeep imports layers "
                          "called once")
    if not inbound:
        return []
    node = inbound[0]
    found: list[tuple[str, int, int]] = []
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        _history(node.get("args", []), found)
        extra: list[tuple[str, int, int]] = []
        _history(node.get("kwargs", {}), extra)
        if extra:
            raise FormatError(f"layer {name!r} takes a tensor as a keyword argument (e.g. an initial state or a "
                              "mask); modelkeep cannot import that")
    elif isinstance(node, list) and node and isinstance(node[0], str):  # tf-keras's TFOpLambda: one entry
        found.append((node[0], node[1] if len(node) > 1 else 0, node[2] if len(node) > 2 else 0))
    elif isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        for item in node:
            if not isinstance(item, list) or len(item) < 3:
                raise FormatError(f"layer {name!r} has a malformed inbound node; the file is corrupt")
            found.append((item[0], item[1], item[2]))
    # Every layer is called once (checked above), so a node index can only mean that call: Keras 2 counts a
    # nested Sequential's own build as call 0 and so refers to 1.
    for source, _node_index, tensor_index in found:
        if not isinstance(source, str) or tensor_index != 0:
            raise FormatError(f"layer {name!r} reads output {tensor_index} of {source!r}; modelkeep imports layers "
                              "with one output")
    return [source for source, _, _ in found]


def _operands(inbound: Any) -> list[str | float] | None:
    """A Keras 3 operation's positional arguments when they mix tensors and numbers (``x + 3.0``): layer names
    for tensors, floats for numbers; None for anything else (a layer's call, ``Add()([a, b])``)."""
    args = inbound[0].get("args") if isinstance(inbound, list) and inbound and isinstance(inbound[0], dict) else None
    if not isinstance(args, list):
        return None
    operands: list[str | float] = []
    for arg in args:
        found: list[tuple[str, int, int]] = []
        _history(arg, found)
        if isinstance(arg, dict) and len(found) == 1:
            operands.append(found[0][0])
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            operands.append(float(arg))
        else:
            return None
    return operands if any(isinstance(o, float) for o in operands) else None


def _tf_operands(inbound: Any) -> list[str | float] | None:
    """tf-keras's ``TFOpLambda`` of a tensor and a number (``x + 3.0``: ``[["x", 0, 0, {"y": 3.0}]]``)."""
    node = inbound[0] if isinstance(inbound, list) and len(inbound) == 1 else None
    if not (isinstance(node, list) and len(node) == 4 and isinstance(node[0], str) and isinstance(node[3], dict)):
        return None
    y = node[3].get("y")
    if isinstance(y, bool) or not isinstance(y, (int, float)) or set(node[3]) - {"y", "name"}:
        return None
    return [node[0], float(y)]


def _endpoints(value: Any, what: str) -> list[str]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]  # Keras 3 writes a single input/output flat
    if not isinstance(value, list) or not value:
        raise FormatError(f"the Keras functional config has no valid {what}; the file is corrupt")
    names = []
    for item in value:
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise FormatError(f"the Keras functional config has a malformed {what} entry; the file is corrupt")
        names.append(item[0])
    return names


def _functional(config: Any, depth: int) -> KerasGraph:
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise FormatError("the Keras functional config has no 'layers' list; the file is corrupt")
    if len(config["layers"]) > MAX_LAYERS:
        raise FormatError(f"the Keras model has more than {MAX_LAYERS} layers; refusing it")
    nodes: list[KerasNode] = []
    alias: dict[str, str] = {}  # nested model name -> its output layer
    for index, entry in enumerate(config["layers"]):
        name, class_name, layer_config = _check_entry(entry, index)
        inputs = _node_inputs(name, entry.get("inbound_nodes", []))
        operands = _operands(entry.get("inbound_nodes")) if class_name in _SCALAR_OPERATIONS else None
        if class_name == "TFOpLambda":
            operands = _tf_operands(entry.get("inbound_nodes"))
        if operands is not None:  # Keras 3's ``x + 3.0`` (module keras.src.ops.*; the .h5 config omits modules)
            layer_config = dict(layer_config, _operands=operands)
        if class_name in _MODEL_CLASSES:
            inner, alias[name] = _inline(name, class_name, layer_config, inputs, depth)
            nodes.extend(inner)
        else:
            nodes.append(KerasNode(name, class_name, layer_config, inputs))
    for node in nodes:
        node.inputs = [alias.get(source, source) for source in node.inputs]
    outputs = [alias.get(n, n) for n in _endpoints(config.get("output_layers"), "output_layers")]
    return KerasGraph(str(config.get("name", "model")), nodes, _endpoints(config.get("input_layers"), "input_layers"),
                      outputs)


def parse_model_config(model_config: Any, *, _depth: int = 0) -> KerasGraph:
    """The layers of a Keras model config ``{"class_name": ..., "config": ...}``, each checked by ``check_trust``;
    nested models are inlined (their layers keep their names)."""
    if _depth > 8:
        raise FormatError("the Keras model nests models more than 8 deep; refusing it")
    if not isinstance(model_config, dict) or not isinstance(model_config.get("class_name"), str):
        raise FormatError("the Keras model config is not an object with a 'class_name'; the file is corrupt")
    class_name = model_config["class_name"]
    top = {k: v for k, v in model_config.items() if k != "config"}
    check_trust(top, "<model>")
    if class_name == "Sequential":
        return _sequential(model_config.get("config"), _depth)
    if class_name in ("Functional", "Model"):
        return _functional(model_config.get("config"), _depth)
    check_trust(model_config, "<model>")
    raise FormatError(f"the Keras model is a {class_name[:60]!r}; modelkeep imports Sequential and functional models "
                      "(a subclassed model's architecture is Python code, not data)")
