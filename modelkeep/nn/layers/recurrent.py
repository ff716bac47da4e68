"""Builders of ``LSTM`` and ``GRU`` (the batch-first modules of ``modelkeep.nn.modules``)."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.recurrent import GRU, LSTM
from ..layer_builders import register_builder
from ..modules import GRU as GRUModule
from ..modules import LSTM as LSTMModule


@register_builder("LSTM", "GRU")
def build_recurrent(kind: LSTM | GRU, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    cls = LSTMModule if kind.gates == 4 else GRUModule
    return cls(inputs[0][-1], f.units, num_layers=f.num_layers, bias=f.use_bias, batch_first=True,
               dropout=f.dropout, bidirectional=f.bidirectional, return_sequences=f.return_sequences)
