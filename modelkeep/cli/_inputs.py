"""What ``predict`` reads: samples from a NumPy file, a CSV table, an image or a folder of images.

Only modelkeep.data's bounded readers touch the file (nothing is unpickled, declared sizes are
checked before allocating, images are capped in pixels and decoded straight to the model's input
size), and the dtype of a NumPy file is kept, so int64 token ids stay integers. A CSV is read as
``train`` reads it: when it has one column more than the model has features, that column is the
target (the one named, else the one the model was trained with, else the last) and is left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import DataError, ModelNotFoundError

CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz")
NPZ_FEATURE_NAMES = ("x", "X", "features", "data", "inputs", "arr_0")
if TYPE_CHECKING:  # numpy is imported where it is used: `modelkeep --help` and `inspect` never need it
    import numpy as np

from ._options import INPUT_KINDS as KINDS


@dataclass(frozen=True)
class Inputs:
    """The samples, and the image file of each when they came from images."""

    x: np.ndarray
    files: tuple[str, ...] | None = None


def read_inputs(source: str, input_shape: Sequence[int] | None, *, target: str | int | None = None,
                recorded_target: str | int | None = None) -> Inputs:
    """The samples in ``source``, shaped ``(N, *input_shape)`` when the model's ``input_shape`` is known.

    For a CSV, ``target`` names (or indexes) a target column to leave out; ``recorded_target`` is the one
    the model was trained with, used when ``target`` is not given (see ``_csv``).
    """
    from ..data.images import IMAGE_SUFFIXES

    path = Path(source)
    name = path.name.lower()
    if path.is_dir():
        return _images(sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       input_shape, source)
    if not path.exists():
        raise ModelNotFoundError(f"no such input file: {source!r}")
    if name.endswith(".npy"):
        from ..data import read_array

        return Inputs(_shaped(read_array(path), input_shape, source))
    if name.endswith(".npz"):
        from ..data.npy import read_npz

        return Inputs(_shaped(read_npz(path, {"x": NPZ_FEATURE_NAMES})["x"], input_shape, source))
    if name.endswith(CSV_SUFFIXES):
        return Inputs(_csv(path, input_shape, target, recorded_target))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _images([str(path)], input_shape, source)
    raise DataError(f"cannot read {source!r}: predict reads {KINDS}")


def _shaped(x: np.ndarray, input_shape: Sequence[int] | None, source: object) -> np.ndarray:
    """``x`` with each sample reshaped to ``input_shape`` when it holds as many values (a flat CSV row for a
    (1, 8, 8) image); otherwise unchanged, for the model to accept or refuse."""
    if input_shape is None or x.ndim == 0:
        return x
    shape = tuple(int(d) for d in input_shape)
    if x.shape[1:] != shape and x.shape != shape and math.prod(x.shape[1:]) == math.prod(shape):
        return x.reshape(len(x), *shape)
    return x


def _read_csv(path: Path, target: str | int):
    """The table with ``target`` as its target column, and that column as float32 numbers (None when it holds text)."""
    import numpy as np

    from ..data import read_csv

    try:  # read as numbers first, so that the column can serve as a feature too
        table = read_csv(path, target=target, task="regression")
        return table, table.y.reshape(len(table.x), -1).astype(np.float32)
    except DataError as numeric_error:
        try:  # a column of class names can only be the target
            return read_csv(path, target=target, task="classification"), None
        except DataError:
            raise numeric_error from None


def _csv(path: Path, input_shape: Sequence[int] | None, target: str | int | None, recorded: str | int | None):
    """A CSV's features. A file with one column more than the model's features holds the target too: the column
    ``target`` names, else the one the model was trained with (``recorded``), else the last, as train reads it."""
    import numpy as np

    chosen = target if target is not None else recorded if recorded is not None else -1
    try:
        table, column = _read_csv(path, chosen)
    except DataError as exc:
        if target is not None or chosen == -1 or "no column named" not in str(exc):
            raise
        chosen = -1  # the column the model was trained with is not in this file: it holds features only
        table, column = _read_csv(path, chosen)
    width = table.x.shape[1] + 1
    wanted = math.prod(int(d) for d in input_shape) if input_shape is not None else width
    if width == wanted + 1:
        return _shaped(table.x, input_shape, path)
    if width == wanted and target is None:  # no target column: every column is a feature
        if chosen != -1 or column is None:
            table, column = _read_csv(path, -1)
        if column is None:
            raise DataError(f"{path}: the last column holds text, but all {wanted} columns are features of this "
                            "model and must be numbers")
        return _shaped(np.concatenate([table.x, column], axis=1), input_shape, path)
    raise DataError(f"{path}: {width} columns, but the model expects {wanted} features per sample (a row of "
                    f"{wanted} numbers, or {wanted + 1} with the target column, chosen with --target)")


def _images(files: list[str], input_shape: Sequence[int] | None, source: str) -> Inputs:
    import numpy as np

    from ..data import DEFAULT_LIMITS
    from ..data.images import IMAGE_SUFFIXES, MODES, decode_image
    from ..data.limits import check_elements, check_pixels

    if not files:
        raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else ()
    if len(shape) != 3 or shape[0] not in MODES:
        raise DataError(f"{source}: images are read as (channels, height, width) with 1, 3 or 4 channels, but "
                        f"this model expects samples of shape {list(shape) or 'unknown'}; give a .npy array instead")
    channels, height, width = shape
    check_pixels((width, height), DEFAULT_LIMITS, f"{source} (the model's input size)")
    check_elements(len(files) * channels * height * width, source, f"{len(files)} images", DEFAULT_LIMITS)
    x = np.stack([decode_image(file, (height, width), MODES[channels], DEFAULT_LIMITS) for file in files])
    return Inputs(x, tuple(files))
