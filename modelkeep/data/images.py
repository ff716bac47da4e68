"""Image folders: ``root/<class name>/<file>``, listed up front and decoded one image at a time, bounded.

Every image's pixel count is read from its header (Pillow opens lazily) and checked
against ``ReaderLimits.max_image_pixels`` before it is decoded; JPEGs are decoded
straight at a reduced scale when the target size is smaller; every image is brought
to the requested size and channel count as it is read. Class folders are matched to
a model's ``labels`` by name when they are given.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from .._overrides import shorten_value
from ..errors import DataError, ModelNotFoundError
from .dataset import Task
from .limits import DEFAULT_LIMITS, ReaderLimits, check_pixels, resolve_limits
from .targets import match_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
MODES = {channels: mode for mode, channels in CHANNELS.items()}


def _image_errors() -> tuple[type[BaseException], ...]:
    # a broken or hostile file can raise any of these from Pillow's decoders
    return (OSError, ValueError, SyntaxError, EOFError)


@contextmanager
def _opened(file: str, limits: ReaderLimits) -> Iterator[Any]:
    """``file`` opened lazily (header only), its pixel count checked; every Pillow failure a ``DataError``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # our own cap is checked right after; Pillow's warning would only repeat it on stderr
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{file}: more pixels than Pillow allows ({' '.join(str(exc).split())[:160]}); "
                        "shrink the image first") from None
    except _image_errors() as exc:
        raise DataError(f"cannot read image {file!r}: {' '.join(str(exc).split())[:200]}") from None
    with image:
        check_pixels(image.size, limits, file)
        try:
            yield image
        except DataError:
            raise
        except _image_errors() as exc:
            raise DataError(f"cannot read image {file!r}: {' '.join(str(exc).split())[:200]}") from None


def decode_image(file: str, size: tuple[int, int], mode: str, limits: ReaderLimits) -> np.ndarray:
    """One image as a float32 ``(C, H, W)`` array of 0-255 values, of ``size`` (H, W) and ``mode``'s channels."""
    height, width = size
    with _opened(file, limits) as image:
        image.draft(mode, (width, height))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
        image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height))
        array = np.asarray(image, dtype=np.float32)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class ImageFolder:
    """Images in ``root/<class name>/<file>``, decoded on demand as float32 ``(C, H, W)`` arrays with values 0-255.

    Has the same surface as ``Dataset`` for splitting (``y``, ``labels``, ``task``,
    ``subset``), but no ``x``: ``fit`` streams it through a DataLoader.
    """

    name: str
    files: tuple[str, ...]
    y: np.ndarray
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    mode: str = "RGB"
    task: Task = "classification"
    limits: ReaderLimits = field(default=DEFAULT_LIMITS, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (CHANNELS[self.mode], *self.image_size)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        return decode_image(self.files[index], self.image_size, self.mode, self.limits), self.y[index]

    def subset(self, indices: np.ndarray, name: str | None = None) -> "ImageFolder":
        indices = np.asarray(indices)
        return replace(self, name=name or self.name, files=tuple(self.files[i] for i in indices), y=self.y[indices])

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """Up to ``count`` decoded images chosen at random (seeded), stacked: what preprocessing is fitted on."""
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(len(self))[:count]
        return np.stack([self[int(i)][0] for i in np.sort(chosen)])

    def fingerprint(self) -> str:
        """A content hash of every file (in order) and its class (xxh3-128), read in chunks."""
        import xxhash

        digest = xxhash.xxh3_128()
        for file, target in zip(self.files, self.y):
            digest.update(f"{Path(file).name}:{int(target)}:".encode())
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return f"xxh3-128:{digest.hexdigest()}"


def _shape_and_mode(input_shape: Sequence[int] | None, image_size, mode: str | None,
                    root: Path) -> tuple[tuple[int, int] | None, str]:
    """The (H, W) and colour mode asked for, from ``input_shape`` (C, H, W) or ``image_size`` and ``mode``."""
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3:
            raise DataError(f"{root}: images are read as (channels, height, width), but the model expects samples "
                            f"of shape {list(shape)}; use a model whose input is (C, H, W)")
        channels, height, width = shape
        if channels not in MODES:
            raise DataError(f"{root}: the model expects {channels} channels, but images give 1 (grey), 3 (RGB) "
                            "or 4 (RGBA); use a model with one of those")
        if mode is not None and CHANNELS.get(mode) != channels:
            raise DataError(f"mode {mode!r} gives {CHANNELS.get(mode, '?')} channels but the model expects {channels}")
        if image_size is not None and _size(image_size) != (height, width):
            raise DataError(f"image_size {list(_size(image_size))} differs from the model's input {height}x{width}")
        return (height, width), MODES[channels]
    mode = "RGB" if mode is None else mode
    if mode not in CHANNELS:
        raise DataError(f"image mode must be 'RGB', 'L' or 'RGBA', got {shorten_value(mode)}")
    return (None if image_size is None else _size(image_size)), mode


def _size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = (int(image_size[0]), int(image_size[1]))
    if len(image_size) != 2 or min(size) < 1:
        raise DataError(f"image_size must be (height, width) of positive integers, got {shorten_value(image_size)}")
    return size


def _first_image_size(file: str, limits: ReaderLimits) -> tuple[int, int]:
    with _opened(file, limits) as first:
        return (first.size[1], first.size[0])


def read_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | list[int] | int | None = None,
    mode: Literal["RGB", "L", "RGBA"] | None = None,
    input_shape: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    name: str | None = None,
    limits: ReaderLimits | None = None,
) -> ImageFolder:
    """An image folder with one sub-folder per class.

    ``input_shape`` (C, H, W), a model's input, sets the size and the colour mode (1 channel: grey,
    3: RGB, 4: RGBA); otherwise ``image_size`` (H, W) defaults to the first image's size and ``mode``
    to RGB. ``labels``, a model's class names, match class folders by name (a model labelled
    ``malignant, benign`` reads folders ``benign/`` and ``malignant/``); without them classes are
    the folder names in sorted order.
    """
    limits = resolve_limits(limits)
    root = Path(root)
    if root.is_file():
        raise DataError(f"{str(root)!r} is a file, not an image folder (one sub-folder of images per class)")
    if not root.is_dir():
        raise ModelNotFoundError(f"image folder {str(root)!r} does not exist")
    size, mode = _shape_and_mode(input_shape, image_size, mode, root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < (1 if labels is not None else 2):
        raise DataError(f"{root}: an image folder needs one sub-folder per class, at least two; "
                        f"found {shorten_value(classes, 200)}")
    files: list[str] = []
    targets: list[int] = []
    for index, label in enumerate(classes):
        found = sorted(str(p) for p in (root / label).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise DataError(f"{root / label}: no images ({', '.join(IMAGE_SUFFIXES)}) in this class folder")
        files.extend(found)
        targets.extend([index] * len(found))
    y = np.asarray(targets, dtype=np.int64)
    found_labels = tuple(classes)
    if labels is not None:
        y, found_labels = match_labels(y, found_labels, labels, root)
    if size is None:
        size = _first_image_size(files[0], limits)
    check_pixels((size[1], size[0]), limits, f"{root} (image_size)")
    return ImageFolder(name or root.name, tuple(files), y, found_labels, size, mode, limits=limits)
