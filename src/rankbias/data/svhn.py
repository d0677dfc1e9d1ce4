"""SVHN (Street View House Numbers), cropped-digit format: MATLAB ``.mat`` files.

``<root>/svhn/train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5, read with
:func:`scipy.io.loadmat`) each hold ``X``, uint8 of shape (32, 32, 3, N) -- height, width,
channel, sample -- and ``y``, shape (N, 1), with labels 1..10 where 10 stands for the digit 0.
The ``extra`` split is not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import missing_files, obtain

FILES = ("train_32x32.mat", "test_32x32.mat")
URL = "http://ufldl.stanford.edu/housenumbers/"


def load(directory: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 3, 32, 32), int64 labels 0..9."""
    missing = [file for file in FILES if not (directory / file).is_file()]
    urls = [URL + file for file in missing]
    obtain("svhn", directory, missing, urls, download)
    still = [file for file in FILES if not (directory / file).is_file()]
    if still:
        raise missing_files("svhn", directory, still, urls, "not there after downloading")
    return (*read_mat(directory / FILES[0]), *read_mat(directory / FILES[1]))


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) (a transposed view) and labels (N,) with 10 mapped to 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # MatReadError, ValueError, NotImplementedError (v7.3 files)...  # noqa: BLE001
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None
    for key in ("X", "y"):
        if key not in mat:
            raise DataError(f"{path}: has no variable {key!r} (SVHN files hold X and y)")
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X must be uint8 of shape (32, 32, 3, N), found {x.dtype} {x.shape}")
    if y.size != x.shape[3] or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: y must hold {x.shape[3]} labels (one per image), found {y.dtype} {y.shape}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10 or not np.array_equal(labels, y.reshape(-1))):
        raise DataError(f"{path}: labels must be integers 1..10 (10 is the digit 0)")
    labels[labels == 10] = 0
    return x.transpose(3, 2, 0, 1), labels
