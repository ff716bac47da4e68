"""Preprocessing fitted on the training split and saved with the model as plain data.

A preprocessor is fitted once (``fit(x)``), then applied everywhere
(``transform(x)``), and stored in the model file as JSON (``to_dict``), so that
``predict`` applies exactly what training applied. Never fit on validation or
test data.

Feature steps: ``standardize``, ``min_max`` (scale to [0, 1] with the training
minimum and maximum), ``rescale`` (a fixed factor, e.g. 1/255). Target steps:
``one_hot`` (class indices to one-hot rows) and ``label_map`` (raw class values
to indices). ``Pipeline`` chains them; ``make_preprocessing`` builds one from a
config (a name, a dict, or a list of those).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .._registry import Registry
from ..errors import FormatError


class Preprocessor(Protocol):
    def fit(self, x: np.ndarray) -> "Preprocessor": ...
    def transform(self, x: np.ndarray) -> np.ndarray: ...
    def to_dict(self) -> dict[str, Any]: ...


PREPROCESSORS: Registry[type] = Registry("preprocessor", FormatError)


@PREPROCESSORS.register("standardize")
@dataclass
class Standardize:
    """``(x - mean) / std`` per feature, with mean and std from the training split.

    ``per_feature=False`` uses one mean and std for all values (images).
    Features whose std is zero are left centred, not divided.
    """

    per_feature: bool = True
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> "Standardize":
        x = np.asarray(x, dtype=np.float64)
        if self.per_feature:
            self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        else:
            self.mean, self.std = np.array(x.mean()), np.array(x.std())
        self.std = np.where(self.std > 0, self.std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardize.transform called before fit")
        x = np.asarray(x, dtype=np.float32)
        if self.per_feature and x.shape[1:] != self.mean.shape:
            from ..errors import DataError

            raise DataError(f"input samples have shape {list(x.shape[1:])} but the model expects {list(self.mean.shape)}")
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "standardize",
            "per_feature": self.per_feature,
            "shape": list(np.shape(self.mean)),
            "mean": np.asarray(self.mean, dtype=np.float64).ravel().tolist(),
            "std": np.asarray(self.std, dtype=np.float64).ravel().tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Standardize":
        try:
            shape = tuple(int(d) for d in data["shape"])
            mean = np.asarray(data["mean"], dtype=np.float64)
            std = np.asarray(data["std"], dtype=np.float64)
            if mean.size != int(np.prod(shape)) or std.size != mean.size:
                raise ValueError("mean/std do not match shape")
            return cls(bool(data.get("per_feature", True)), mean.reshape(shape), std.reshape(shape))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed 'standardize' preprocessing in the file: {exc}") from None


@PREPROCESSORS.register("min_max", aliases=("minmax", "scale"))
@dataclass
class MinMaxScale:
    """``(x - min) / (max - min)`` with the training minimum and maximum (per feature, or one pair for all values)."""

    per_feature: bool = True
    minimum: np.ndarray | None = None
    maximum: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> "MinMaxScale":
        x = np.asarray(x, dtype=np.float64)
        if self.per_feature:
            self.minimum, self.maximum = x.min(axis=0), x.max(axis=0)
        else:
            self.minimum, self.maximum = np.array(x.min()), np.array(x.max())
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.minimum is None or self.maximum is None:
            raise RuntimeError("MinMaxScale.transform called before fit")
        x = np.asarray(x, dtype=np.float32)
        if self.per_feature and x.shape[1:] != self.minimum.shape:
            from ..errors import DataError

            raise DataError(f"input samples have shape {list(x.shape[1:])} but the model expects {list(self.minimum.shape)}")
        span = np.where(self.maximum > self.minimum, self.maximum - self.minimum, 1.0)
        return ((x - self.minimum) / span).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "min_max", "per_feature": self.per_feature, "shape": list(np.shape(self.minimum)),
            "min": np.asarray(self.minimum, dtype=np.float64).ravel().tolist(),
            "max": np.asarray(self.maximum, dtype=np.float64).ravel().tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MinMaxScale":
        try:
            shape = tuple(int(d) for d in data["shape"])
            low = np.asarray(data["min"], dtype=np.float64)
            high = np.asarray(data["max"], dtype=np.float64)
            if low.size != int(np.prod(shape)) or high.size != low.size:
                raise ValueError("min/max do not match shape")
            return cls(bool(data.get("per_feature", True)), low.reshape(shape), high.reshape(shape))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed 'min_max' preprocessing in the file: {exc}") from None


@PREPROCESSORS.register("rescale")
@dataclass
class Rescale:
    """``x * factor + offset`` with fixed numbers (``Rescale(1/255)`` for 8-bit images); nothing is fitted."""

    factor: float = 1.0 / 255.0
    offset: float = 0.0

    def fit(self, x: np.ndarray) -> "Rescale":
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) * np.float32(self.factor) + np.float32(self.offset)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "rescale", "factor": float(self.factor), "offset": float(self.offset)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Rescale":
        try:
            return cls(float(data["factor"]), float(data.get("offset", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed 'rescale' preprocessing in the file: {exc}") from None


@PREPROCESSORS.register("one_hot", aliases=("onehot",))
@dataclass
class OneHot:
    """A target step: class indices ``(N,)`` to one-hot float rows ``(N, num_classes)``.

    ``num_classes`` is fitted from the training targets unless given. Used with
    ``mse`` or cross-entropy on probability targets; features pass unchanged.
    """

    num_classes: int | None = None
    targets_only = True

    def fit(self, x: np.ndarray) -> "OneHot":
        return self

    def fit_targets(self, y: np.ndarray) -> "OneHot":
        if self.num_classes is None:
            self.num_classes = int(np.max(y)) + 1 if len(y) else 0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x

    def transform_targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2:
            return y.astype(np.float32)
        return np.eye(int(self.num_classes or 0), dtype=np.float32)[y.astype(np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "one_hot", "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OneHot":
        value = data.get("num_classes")
        if value is not None and (not isinstance(value, int) or value < 0):
            raise FormatError(f"malformed 'one_hot' preprocessing in the file: num_classes={value!r}")
        return cls(value)


@PREPROCESSORS.register("label_map")
@dataclass
class LabelMap:
    """A target step: raw class values (text or numbers) to indices 0..K-1, in sorted order of the training values.

    ``classes[i]`` is the raw value of class ``i``; a value never seen in training is a ``DataError``.
    """

    classes: list[str] | None = None
    targets_only = True

    def fit(self, x: np.ndarray) -> "LabelMap":
        values = {str(v) for v in np.asarray(x, dtype=object).ravel()}

        def order(value: str) -> tuple[int, float, str]:
            try:
                return (0, float(value), value)
            except ValueError:
                return (1, 0.0, value)

        self.classes = sorted(values, key=order)
        return self

    def fit_targets(self, y: np.ndarray) -> "LabelMap":
        return self.fit(y) if self.classes is None else self

    def transform(self, x: Any) -> np.ndarray:
        if self.classes is None:
            raise RuntimeError("LabelMap.transform called before fit")
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.array([index[str(v)] for v in np.asarray(x, dtype=object).ravel()], dtype=np.int64)
        except KeyError as exc:
            from ..errors import DataError

            raise DataError(f"class {exc.args[0]!r} was not in the training data; known classes: {self.classes}") from None

    def transform_targets(self, y: Any) -> np.ndarray:
        return self.transform(y)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "label_map", "classes": list(self.classes or [])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelMap":
        classes = data.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise FormatError("malformed 'label_map' preprocessing in the file: 'classes' must be a list of strings")
        return cls(classes)


@PREPROCESSORS.register("pipeline")
@dataclass
class Pipeline:
    """Steps applied in order; feature steps transform ``x``, target steps (``one_hot``, ``label_map``) ``y``."""

    steps: list[Any]

    def fit(self, x: np.ndarray) -> "Pipeline":
        for step in self.steps:
            if not getattr(step, "targets_only", False):
                x = step.fit(x).transform(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if not getattr(step, "targets_only", False):
                x = step.transform(x)
        return x

    def fit_targets(self, y: np.ndarray) -> "Pipeline":
        for step in self.steps:
            if hasattr(step, "fit_targets"):
                y = step.fit_targets(y).transform_targets(y)
        return self

    def transform_targets(self, y: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if hasattr(step, "transform_targets"):
                y = step.transform_targets(y)
        return y

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pipeline", "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pipeline":
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise FormatError("malformed 'pipeline' preprocessing in the file: 'steps' must be a list")
        return cls([preprocessor_from_dict(step) for step in steps])


def make_preprocessing(config: Any) -> Preprocessor | None:
    """A preprocessor from a config: ``"standardize"``, ``{"type": "rescale", "factor": 0.0039}``, or a list of those."""
    from ..errors import ConfigError

    if config in (None, False, "none", []):
        return None
    if isinstance(config, (list, tuple)):
        steps = [make_preprocessing(item) for item in config]
        return Pipeline([s for s in steps if s is not None])
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(f"preprocessing must be a name, an object with a 'type', or a list of them; got {config!r}")
    options = {k: v for k, v in config.items() if k != "type"}
    factory = PREPROCESSORS.get(config["type"]) if config["type"] in PREPROCESSORS else None
    if factory is None:
        raise ConfigError(PREPROCESSORS.unknown_message(config["type"]))
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"preprocessing {config['type']!r}: {exc}") from None


def preprocessor_from_dict(data: dict[str, Any] | None) -> Preprocessor | None:
    """Rebuild a saved preprocessor (``None`` stays ``None``)."""
    if data is None:
        return None
    if not isinstance(data, dict) or "type" not in data:
        raise FormatError("preprocessing in the file must be an object with a 'type'")
    return PREPROCESSORS.get(data["type"]).from_dict(data)


from .text import Tokenize  # noqa: E402  (text to token ids: a saved tokenizer)

PREPROCESSORS.register("tokenizer", Tokenize, aliases=("tokenize",))
