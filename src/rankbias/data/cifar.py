"""CIFAR-10 and CIFAR-100, "python version": pickled dictionaries.

Each file is a pickle (read with ``encoding="bytes"``) of a dict with ``b"data"``, an (N, 3072)
uint8 array of images stored channel by channel (1024 red, 1024 green, 1024 blue values, each a
32x32 row-major image), and the labels: ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
(CIFAR-100), a list of N ints.

Layout: ``<root>/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch}`` and
``<root>/cifar100/cifar-100-python/{train, test}`` -- what the official archives unpack to.
Pickles can run code when loaded: only use files from the official archives.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import missing_files, obtain

LAYOUTS = {  # name: (folder in the archive, training files, test files, label key, archive URL)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def load(name: str, directory: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    folder, train_files, test_files, label_key, url = LAYOUTS[name]
    archive = url.rsplit("/", 1)[-1]
    note = f"Unpack {archive} there: it holds {folder}/."

    def absent() -> list[str]:
        return [f"{folder}/{file}" for file in train_files + test_files if not (directory / folder / file).is_file()]

    obtain(name, directory, absent(), [url], download, note)
    if absent():
        raise missing_files(name, directory, absent(), [url], "not in the downloaded archive", note)
    x_train, y_train = _concat([read_batch(directory / folder / file, label_key) for file in train_files])
    x_test, y_test = _concat([read_batch(directory / folder / file, label_key) for file in test_files])
    return x_train, y_train, x_test, y_test


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one pickled batch."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # UnpicklingError, EOFError, ValueError... from a damaged file  # noqa: BLE001
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, expected a dict with b'data' and {label_key!r}")
    for key in (b"data", label_key):
        if key not in batch:
            raise DataError(f"{path}: has no {key!r} entry (it has {sorted(map(repr, batch))})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: b'data' must be an (N, 3072) uint8 array, found {type(data).__name__} {shape}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {label_key!r} are not integer labels ({exc})") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {label_key!r} has shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _concat(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(batches) == 1:
        return batches[0]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
