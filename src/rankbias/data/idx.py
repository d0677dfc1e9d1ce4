"""MNIST and Fashion-MNIST: IDX files, raw or gzip-compressed.

IDX format (all integers big-endian): a 4-byte magic number ``0x00 0x00 <type> <ndim>`` with type
``0x08`` (unsigned bytes), then ``ndim`` uint32 dimensions, then the values in row-major order.
Images: magic ``0x00000803``, dimensions (N, 28, 28). Labels: magic ``0x00000801``, dimension (N,).

``<root>/mnist/`` and ``<root>/fashion-mnist/`` hold the four files below, each either under its
own name or with ``.gz`` appended (the raw file wins when both are there).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import missing_files, obtain

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
URLS = {  # base URLs; each file is fetched as <base><name>.gz
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


def load(name: str, directory: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 1, 28, 28) and int64 labels (N,)."""
    names = [file for pair in SPLITS.values() for file in pair]
    missing = [file for file in names if _find(directory, file) is None]
    urls = [f"{URLS[name]}{file}.gz" for file in missing]
    shown = [f"{file}[.gz]" for file in missing]
    note = "Each file may be raw or gzip-compressed (name + .gz)."
    obtain(name, directory, shown, urls, download, note)
    still = [f"{file}[.gz]" for file in names if _find(directory, file) is None]
    if still:
        raise missing_files(name, directory, still, urls, "not there after downloading", note)
    out = []
    for images_name, labels_name in SPLITS.values():
        images_path, labels_path = _find(directory, images_name), _find(directory, labels_name)
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
        if len(images) != len(labels):
            raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
        out += [images[:, None], labels.astype(np.int64)]
    return tuple(out)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array stored in an IDX file of unsigned bytes with the given magic number (read-only)."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    what = "image" if magic == IMAGES_MAGIC else "label"
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX {what} file (magic number 0x{found:08x}, expected 0x{magic:08x})")
    ndim = magic & 0xFF
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, the header needs {start})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)
    if len(raw) - start != size:
        problem = "truncated" if len(raw) - start < size else "has trailing bytes"
        raise DataError(f"{path}: {problem}: dimensions {dims} need {size} bytes of values, found {len(raw) - start}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None
