"""A BERT-family Hugging Face folder as the zoo ``bert`` spec: sizes from ``config.json``, pooling from the folder.

``config.json`` gives the sizes (checked against the tensors before a spec is
made, so a config declaring a billion layers is refused at once). What the
model outputs follows the folder: a sentence-transformers folder
(``modules.json``) gets its ``Pooling`` mode and its ``Normalize``; a
``BertForSequenceClassification`` its classifier, labels and task; a plain
``BertModel`` BERT's pooled output; a checkpoint without a pooler (a masked-LM
one) the last hidden state. The tensors are renamed by the ``bert:huggingface``
layout and checked against the spec built on the meta device: a missing or
mis-shaped tensor is a ``FormatError``; extra ones (a masked-LM head) are left
for the caller to report.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..artifact.format import loads_bounded
from ..errors import ConfigError, FormatError, SpecError
from .base import Imported
from .hf_files import folder_file, read_bounded, read_json
from .layouts.text import bert_from_huggingface

BERT_MODEL_TYPES = ("bert",)
MAX_LAYERS = 1024
MAX_LABELS = 100_000
MAX_TOKENIZER_BYTES = 8 << 20    # kept in the manifest, escaped twice: stays under its 64 MiB limit
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "max_position_embeddings", "type_vocab_size")
_LAYER = re.compile(r"layers\.layer_(\d+)\.")
_POOLING_MODES = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": None,
                  "pooling_mode_weightedmean_tokens": None, "pooling_mode_lasttoken": None}


def _config_options(config: dict[str, Any], where: Path) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in _SIZES:
        value = config.get(key)
        if value is not None:
            if type(value) is not int or value < 0:
                raise FormatError(f"{where}: {key} must be a non-negative integer, got {str(value)[:40]!r}")
            options[key] = value
    for key in ("layer_norm_eps", "hidden_dropout_prob"):
        if isinstance(config.get(key), (int, float)) and not isinstance(config.get(key), bool):
            options[key] = float(config[key])
    pad = config.get("pad_token_id")
    options["pad_token_id"] = pad if type(pad) is int else 0
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise FormatError(f"{where}: hidden_act {str(act)[:40]!r} is not supported; modelkeep's BERT takes "
                          f"{', '.join(_ACTIVATIONS)}")
    options["hidden_act"] = _ACTIVATIONS[act]
    position = config.get("position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise FormatError(f"{where}: position_embedding_type {str(position)[:40]!r} is not supported; "
                          "modelkeep's BERT has absolute (learned) positions only")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise FormatError(f"{where}: a BERT decoder (is_decoder / add_cross_attention) is not supported; "
                          "modelkeep imports BERT encoders")
    return options


def _sentence_transformers(folder: Path) -> dict[str, Any] | None:
    """Pooling, normalisation and input length of a sentence-transformers folder; None for another folder."""
    modules = read_json(folder / "modules.json", "modules.json", required=False)
    if modules is None:
        return None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules) or len(modules) > 32:
        raise FormatError(f"{folder / 'modules.json'} must be a list of at most 32 module records")
    options: dict[str, Any] = {"pooling": "none", "normalize": False}
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer" and module.get("path", "") in ("", "."):
            continue
        if kind == "Pooling":
            options["pooling"] = _pooling_mode(folder_file(folder / str(module.get("path", "")), "config.json",
                                                           "the Pooling module"))
        elif kind == "Normalize":
            options["normalize"] = True
        else:
            raise FormatError(f"{folder}: the sentence-transformers module {str(module.get('type'))[:80]!r} "
                              f"(path {str(module.get('path'))[:40]!r}) is not supported; modelkeep imports a "
                              "Transformer in the folder itself, Pooling and Normalize")
    settings = read_json(folder / "sentence_bert_config.json", "sentence_bert_config.json", required=False)
    if isinstance(settings, dict) and type(settings.get("max_seq_length")) is int and settings["max_seq_length"] > 0:
        options["seq_len"] = settings["max_seq_length"]
    return options


def _pooling_mode(path: Path) -> str:
    config = read_json(path, "the Pooling config")
    if not isinstance(config, dict):
        raise FormatError(f"{path} must be a JSON object")
    chosen = [key for key in _POOLING_MODES if config.get(key) is True]
    if len(chosen) != 1 or _POOLING_MODES[chosen[0]] is None:
        raise FormatError(f"{path}: pooling {chosen or 'none'} is not supported; modelkeep takes exactly one of "
                          "pooling_mode_cls_token, pooling_mode_mean_tokens, pooling_mode_max_tokens")
    return _POOLING_MODES[chosen[0]]


def _head(config: dict[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Zoo options and ``Imported`` fields for a ``BertForSequenceClassification`` (empty for an encoder)."""
    architectures = config.get("architectures") or []
    if "BertForSequenceClassification" not in architectures:
        return {}, {}
    id2label = config.get("id2label")
    labels = None
    if isinstance(id2label, dict) and 0 < len(id2label) <= MAX_LABELS:
        try:
            order = sorted((int(k), str(v)[:200]) for k, v in id2label.items())
        except (TypeError, ValueError):
            raise FormatError(f"{where}: id2label keys must be class indices") from None
        if [i for i, _ in order] == list(range(len(order))):
            labels = [name for _, name in order]
    count = config.get("num_labels", len(labels) if labels else 2)
    if type(count) is not int or not 0 < count <= MAX_LABELS:
        raise FormatError(f"{where}: num_labels must be a positive integer, got {str(count)[:40]!r}")
    problem = config.get("problem_type") or ("regression" if count == 1 else "single_label_classification")
    extra: dict[str, Any] = {"labels": labels if labels and len(labels) == count else None}
    if problem == "regression":
        extra.update(task="regression", postprocessing="identity", labels=None)
    elif problem == "single_label_classification":
        extra.update(task="classification", postprocessing="softmax")
    else:
        extra.update(postprocessing="identity", notes=[f"problem_type {str(problem)[:40]!r}: the outputs are raw "
                                                       "logits (apply a sigmoid per label for multi-label)"])
    return {"num_classes": count, "pooling": "cls"}, extra


def _check_layers(state: dict[str, Any], options: dict[str, Any], where: Path) -> None:
    """The config's layer count against the tensors, before a spec of that many layers is made."""
    found = {int(m.group(1)) for name in state if (m := _LAYER.match(name))}
    declared = options.get("num_hidden_layers", 12)
    if declared > MAX_LAYERS or found != set(range(declared)):
        raise FormatError(f"{where}: config.json declares num_hidden_layers={declared} but the weights hold "
                          f"{len(found)} encoder layer(s); the folder is inconsistent")


def expected_shapes(spec: Any) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of the zoo ``bert`` spec, from its layers alone (no torch, nothing built).

    What ``build(spec).state_dict()`` holds (a test keeps the two equal); building on the meta device
    instead would first import much of torch (seconds).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    d = spec.shapes["word_embeddings"][-1]
    for layer in spec.layers:
        f, name = layer.kind.fields, f"layers.{layer.name}"
        if layer.kind_name == "Embedding":
            shapes[f"{name}.weight"] = (f.num_embeddings, f.embedding_dim)
        elif layer.kind_name == "PositionalEmbedding":
            shapes[f"{name}.weight"] = (f.max_length, d)
        elif layer.kind_name == "TokenTypeEmbedding":
            shapes[f"{name}.weight"] = (f.num_types, d)
        elif layer.kind_name == "LayerNorm":
            shapes.update({f"{name}.weight": (d,), f"{name}.bias": (d,)})
        elif layer.kind_name == "Dense":
            units = f.units
            shapes.update({f"{name}.weight": (units, d), f"{name}.bias": (units,)})
        elif layer.kind_name == "TransformerEncoder":
            ff = layer.kind.ff_dim(d)
            for part, shape in (("self_attn.in_proj_weight", (3 * d, d)), ("self_attn.in_proj_bias", (3 * d,)),
                                ("self_attn.out_proj.weight", (d, d)), ("self_attn.out_proj.bias", (d,)),
                                ("linear1.weight", (ff, d)), ("linear1.bias", (ff,)), ("linear2.weight", (d, ff)),
                                ("linear2.bias", (d,)), ("norm1.weight", (d,)), ("norm1.bias", (d,)),
                                ("norm2.weight", (d,)), ("norm2.bias", (d,))):
                shapes[f"{name}.{part}"] = shape
    return shapes


def _match(spec: Any, state: dict[str, Any], where: Path) -> list[str]:
    """Check ``state`` against the spec's tensors; the names it holds beyond the spec's."""
    expected = expected_shapes(spec)
    missing = [name for name in expected if name not in state]
    wrong = [(name, tuple(state[name].shape), shape) for name, shape in expected.items()
             if name in state and tuple(state[name].shape) != shape]
    if missing or wrong:
        problems = [f"missing {name}" for name in missing[:3]]
        problems += [f"{name}: weights {list(got)} but config.json implies {list(want)}"
                     for name, got, want in wrong[:3]]
        raise FormatError(f"{where}: the weights do not fit the architecture config.json describes "
                          f"({len(missing)} missing, {len(wrong)} mis-shaped: {'; '.join(problems)})")
    return [name for name in state if name not in expected]


def bert_imported(folder: Path, config: dict[str, Any], tensors: dict[str, Any], details: dict[str, Any]) -> Imported:
    """The ``Imported`` of a BERT-family folder: spec, renamed tensors, pooling, labels and notes."""
    from ..zoo import get_spec

    where = folder / "config.json"
    options = {"pooling": "cls", **_config_options(config, where)}
    state = bert_from_huggingface(tensors)
    _check_layers(state, options, where)
    head_options, extra = _head(config, where)
    sentence = _sentence_transformers(folder)
    notes = list(extra.pop("notes", []))
    if sentence is not None:  # its modules say what it outputs: sentence embeddings
        options.update(sentence)
        extra = {}
    elif head_options:
        options.update(head_options)
    elif "layers.pooler.weight" not in state:
        options["pooling"] = "none"
        notes.append("the checkpoint has no pooler: the model outputs the last hidden state (T, D)")
    if options.get("seq_len", 0) > options.get("max_position_embeddings", 512):
        options["seq_len"] = options.get("max_position_embeddings", 512)
    if "type_vocab_size" in options and "layers.token_type_embeddings.weight" not in state:
        options["type_vocab_size"] = 0
    try:
        spec = get_spec("bert", **options)
    except SpecError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if "layers.pooler.weight" in state and options.get("pooling") != "cls":
        state = {k: v for k, v in state.items() if not k.startswith("layers.pooler.")}
        notes.append(f"BERT's pooler is not used by {options['pooling']!r} pooling; it was left out")
    extras = _match(spec, state, folder)
    if extras:
        notes.append(f"{len(extras)} tensor(s) beyond the encoder are not part of the model, e.g. {extras[0][:80]!r}")
    details.update(bert={k: v for k, v in options.items()}, sentence_transformers=sentence is not None)
    preprocessing = _tokenizer(folder, spec, options, notes)
    return Imported(format="huggingface", tensors=state, spec=spec, labels=extra.get("labels"),
                    preprocessing=preprocessing, postprocessing=extra.get("postprocessing", "identity"),
                    task=extra.get("task", "regression"), details=details, notes=notes)  # vectors: no classes


def _tokenizer(folder: Path, spec: Any, options: dict[str, Any], notes: list[str]) -> Any:
    """The folder's ``tokenizer.json`` as preprocessing (text -> the spec's token ids), or None without one."""
    from ..processing.text import Tokenize

    path = folder / "tokenizer.json"
    if not path.is_file():
        notes.append("no tokenizer.json in the folder: the model takes token ids, not text")
        return None
    try:
        raw = read_bounded(path, "the tokenizer", cap=MAX_TOKENIZER_BYTES)
        loads_bounded(raw, f"{path}")  # well-formed, bounded JSON before it is kept
        tokenize = Tokenize(raw.decode("utf-8"), int(spec.input_shape[0]), options.get("pad_token_id", 0))
        tokenize.tokenizer()
    except ConfigError:
        notes.append("tokenizer.json is kept with the model; install 'tokenizers' to predict from text")
    except (FormatError, UnicodeDecodeError) as exc:
        notes.append(f"tokenizer.json was not kept ({str(exc)[:160]}); the model takes token ids, not text")
        return None
    return tokenize
