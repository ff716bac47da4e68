"""Text in: a Hugging Face ``tokenizers`` tokenizer saved with the model as data, turning sentences into token ids.

``Tokenize`` holds the tokenizer's own JSON document (``tokenizer.json``, which
describes normalisation, pre-tokenisation, the vocabulary and the special
tokens as data; nothing in it is code) and the model's input length. Applied
to text it gives one row of ``length`` ids per sentence, truncated with the
special tokens kept and padded with ``pad_id`` (which the model's attention
and pooling ignore). Token ids given instead of text pass through unchanged.
The ``tokenizers`` package is imported only when text is tokenised, so a model
file carrying a tokenizer loads (and predicts from ids) without it. It is
registered as the ``tokenizer`` preprocessor by ``preprocess.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, FormatError

MAX_TEXTS = 1_000_000     # sentences tokenised in one call
MAX_TEXT_CHARS = 1 << 20  # characters of one sentence


@dataclass
class Tokenize:
    """Sentences to ``(N, length)`` int64 token ids with the saved ``tokenizer.json``; ids pass through."""

    tokenizer_json: str
    length: int
    pad_id: int = 0
    takes_text = True  # ``Model.predict`` applies it before checking the input's numbers
    _tokenizer: Any = field(default=None, init=False, repr=False, compare=False)

    def fit(self, x: Any) -> "Tokenize":
        return self

    def transform(self, x: Any) -> np.ndarray:
        texts = _texts(x)
        if texts is None:
            return np.asarray(x)
        out = np.full((len(texts), self.length), self.pad_id, dtype=np.int64)
        for row, encoding in enumerate(self.tokenizer().encode_batch(texts)):
            ids = encoding.ids[: self.length]
            out[row, : len(ids)] = ids
        return out

    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` (built once), truncating to ``length`` and never padding by itself."""
        if self._tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise ConfigError("this model tokenises text with the 'tokenizers' package: pip install tokenizers "
                                  "(or give token ids instead of text)") from None
            try:
                tokenizer = Tokenizer.from_str(self.tokenizer_json)
            except Exception as exc:  # tokenizers raises its own Exception type for a bad document
                raise FormatError(f"the saved tokenizer cannot be read: {str(exc)[:200]}") from None
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.length)
            self._tokenizer = tokenizer
        return self._tokenizer

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tokenizer", "length": self.length, "pad_id": self.pad_id, "tokenizer": self.tokenizer_json}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenize":
        text, length, pad = data.get("tokenizer"), data.get("length"), data.get("pad_id", 0)
        if not isinstance(text, str) or type(length) is not int or length < 1 or type(pad) is not int or pad < 0:
            raise FormatError("malformed 'tokenizer' preprocessing in the file: it needs 'tokenizer' (the "
                              "tokenizer.json text), a positive 'length' and a non-negative 'pad_id'")
        return cls(text, length, pad)


def _texts(x: Any) -> list[str] | None:
    """``x`` as a list of sentences, or None when it holds numbers (token ids)."""
    if isinstance(x, str):
        x = [x]
    if isinstance(x, np.ndarray) and x.dtype.kind not in "UO":
        return None
    items = list(x) if isinstance(x, (list, tuple, np.ndarray)) else None
    if items is None or not all(isinstance(item, (str, np.str_)) for item in items):
        if items is not None and all(not isinstance(item, (str, np.str_)) for item in items):
            return None
        raise DataError("this model takes text: give a sentence or a list of sentences (or token ids)")
    if len(items) > MAX_TEXTS or any(len(item) > MAX_TEXT_CHARS for item in items):
        raise DataError(f"give at most {MAX_TEXTS:,} sentences of at most {MAX_TEXT_CHARS:,} characters at a time")
    return [str(item) for item in items]


__all__ = ["Tokenize"]
