"""Rows from an uploaded file for ``/v1/models/{name}/predict``: an image, or a CSV table of numbers.

The kind is decided from the content, never the name: an image is recognised by its magic bytes and
decoded by ``modelkeep.data``'s bounded decoder (pixels capped before decoding, straight to the model's
input size and channels); anything else must be UTF-8 CSV text, one row of numbers per sample, with an
optional header row. The upload's size is already capped by the server's body limit.
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from ..errors import DataError
from .http_errors import RequestTooLarge
from .inputs import check_values
from .models import ServedModel

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def upload_rows(content: bytes, served: ServedModel, *, max_rows: int) -> np.ndarray:
    """The rows an uploaded file holds, checked like JSON instances."""
    if not content:
        raise DataError("the uploaded file is empty")
    if content.startswith(IMAGE_MAGIC) or (content[:4] == b"RIFF" and content[8:12] == b"WEBP"):
        rows = _image(content, served)
    else:
        rows = _csv(content, served, max_rows)
    check_values(rows, served)
    return rows


def _image(content: bytes, served: ServedModel) -> np.ndarray:
    from ..data.images import decode_image
    from ..data.limits import ReaderLimits

    shape = served.inputs[0].shape
    if len(shape) != 3 or shape[0] not in (1, 3) or None in shape:
        raise DataError(f"model {served.name!r} does not take images (its input is {list(shape)}); send rows")
    channels, height, width = shape
    array = decode_image(io.BytesIO(content), (height, width), "L" if channels == 1 else "RGB", ReaderLimits())
    return array[None].astype(served.inputs[0].dtype, copy=False)


def _csv(content: bytes, served: ServedModel, max_rows: int) -> np.ndarray:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("the upload is neither an image (PNG, JPEG, GIF, BMP, TIFF, WebP) nor UTF-8 CSV text") from None
    shape = served.inputs[0].shape
    if None in shape:
        raise DataError(f"model {served.name!r} takes inputs of variable shape; send JSON instances, not CSV")
    width = math.prod(shape)
    try:
        lines = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise DataError(f"the uploaded CSV cannot be read: {str(exc)[:120]}") from None
    if lines and not _numbers(lines[0]):
        lines = lines[1:]  # a header row
    if not lines:
        raise DataError("the uploaded CSV holds no rows of numbers")
    if len(lines) > max_rows:
        raise RequestTooLarge(f"{len(lines)} rows in the uploaded CSV; this server takes at most {max_rows}")
    for number, row in enumerate(lines, start=1):
        if len(row) != width or not _numbers(row):
            raise DataError(f"CSV row {number} holds {len(row)} values{'' if _numbers(row) else ' (not all numbers)'}; "
                            f"model {served.name!r} takes {width} numbers per row")
    return np.asarray([[float(cell) for cell in row] for row in lines]).astype(served.inputs[0].dtype).reshape(
        len(lines), *shape)


def _numbers(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


__all__ = ["upload_rows"]
