"""Hugging Face's names for a BERT-family encoder, mapped onto the zoo's ``bert`` spec.

Facts about the published layout of ``transformers``' ``BertModel`` (nothing
here imports it): ``embeddings.word_embeddings.weight``,
``encoder.layer.<i>.attention.self.query.weight``, ... The spec's encoder
blocks keep PyTorch's joined ``in_proj_weight``, so a layer's separate query,
key and value projections are stacked in that order. Checkpoints of
``BertFor...`` models carry the encoder under ``bert.`` (stripped here) and a
``classifier``; TensorFlow-era names (``LayerNorm.gamma``/``beta``) are read
too. Names this layout does not know pass through unchanged, so the caller
reports them as unexpected.
"""
from __future__ import annotations

import re

from . import State, register_layout

PREFIXES = ("bert.", "model.", "auto_model.")   # BertFor..., wrappers, sentence-transformers' module

_FIXED = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings_norm.weight",
    "embeddings.LayerNorm.bias": "embeddings_norm.bias",
    "pooler.dense.weight": "pooler.weight",
    "pooler.dense.bias": "pooler.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
_PER_LAYER = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "linear1",
    "output.dense": "linear2",
    "output.LayerNorm": "norm2",
}
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = ("query", "key", "value")
_DROPPED = ("embeddings.position_ids", "embeddings.token_type_ids")   # buffers the spec derives itself


def _strip(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _modern(name: str) -> str:
    """TensorFlow-era ``LayerNorm.gamma``/``beta`` as ``weight``/``bias``."""
    if name.endswith("LayerNorm.gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith("LayerNorm.beta"):
        return name[: -len("beta")] + "bias"
    return name


def bert_from_huggingface(state: State) -> State:
    """A ``BertModel``/``BertFor...`` state dict, in the zoo ``bert`` spec's names (``layers.<layer>.<param>``)."""
    out: State = {}
    projections: dict[tuple[str, str], dict[str, object]] = {}   # (layer index, weight|bias) -> q, k, v
    for source, tensor in state.items():
        name = _modern(_strip(source))
        if name in _DROPPED:
            continue
        if name in _FIXED:
            out[f"layers.{_FIXED[name]}"] = tensor
            continue
        match = _LAYER.match(name)
        if match is None:
            out[source] = tensor
            continue
        index, module, param = match.groups()
        if module.startswith("attention.self.") and module.rsplit(".", 1)[1] in _QKV:
            projections.setdefault((index, param), {})[module.rsplit(".", 1)[1]] = tensor
        elif module in _PER_LAYER:
            out[f"layers.layer_{index}.{_PER_LAYER[module]}.{param}"] = tensor
        else:
            out[source] = tensor
    for (index, param), parts in projections.items():
        if set(parts) == set(_QKV):
            import torch  # the layout is applied to tensors; the registry itself stays light

            out[f"layers.layer_{index}.self_attn.in_proj_{param}"] = torch.cat([parts[p] for p in _QKV], dim=0)
        else:  # an incomplete triple: leave the parts under their own names, reported as unexpected
            for part, tensor in parts.items():
                out[f"encoder.layer.{index}.attention.self.{part}.{param}"] = tensor
    return out


def looks_like_bert(names: list[str]) -> bool:
    """Whether a state dict's names are Hugging Face BERT's (what ``auto`` layout detection asks)."""
    stripped = {_strip(name) for name in names}
    return "embeddings.word_embeddings.weight" in stripped and any(_LAYER.match(n) for n in stripped)


register_layout("bert", "huggingface", bert_from_huggingface,
                "transformers' BertModel / BertForSequenceClassification names (bert. prefix, joined q/k/v)")
