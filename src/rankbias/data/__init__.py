"""Data sets as in-memory tensors: a registry by name, seeded subsets and standardization.

``load_dataset(config)`` returns a :class:`Dataset` of CPU tensors (the caller moves it with
``.to(device)``). Files live under a data root (:func:`default_data_root`): ``<root>/<name>/``.
One module per source format: :mod:`.bundled` (digits, synthetic), :mod:`.idx` (MNIST,
Fashion-MNIST), :mod:`.cifar`, :mod:`.svhn`, :mod:`.california`; :mod:`.download` fetches files.
See ``docs/data.md``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ..errors import DataError
from . import bundled, california, cifar, idx, svhn

if TYPE_CHECKING:
    from ..config import DataConfig

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "dataset_size", "default_data_root", "load_dataset"]


@dataclass(repr=False)
class Dataset:
    """Training and test tensors of one data set, on one device.

    ``x_*``: float32, (N, C, H, W) for images, (N, D) for tabular data. ``y_*``: int64 class
    labels, or float32 targets for regression (``num_classes == 0``).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> Dataset:
        """A copy with all tensors on ``device``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, {self.kind}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, device={self.x_train.device})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a data set before loading it.

    ``layout``: ``"split"`` (official train/test files; ``train_size``/``test_size`` are their
    full sizes and the defaults), ``"pool"`` (one set of ``pool_size`` samples that the subset
    seed splits into disjoint train/test subsets) or ``"generated"`` (``synthetic``: any size).
    ``num_classes`` is 0 for regression; for ``synthetic`` it is the default of
    ``data.synthetic.classes``, which decides. ``scale`` maps raw image values to [0, 1].
    """

    name: str
    kind: Literal["image", "tabular"]
    num_classes: int
    train_size: int
    test_size: int
    description: str
    layout: Literal["split", "pool", "generated"]
    pool_size: int | None = None
    scale: float = 255.0
    read: Callable | None = dataclasses.field(default=None, repr=False, compare=False)


def _split(module, name):
    return lambda directory, download: module.load(name, directory, download)


def _read_digits(directory, download):
    return bundled.digits()


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "digits", "image", 10, 1497, 300, "scikit-learn's bundled 8x8 handwritten digits (1797 images, one pool)",
            "pool", pool_size=bundled.DIGITS_SIZE, scale=16.0, read=_read_digits,
        ),
        DatasetInfo(
            "synthetic", "tabular", 10, 1000, 1000,
            "Gaussian inputs labelled by a random two-layer ReLU teacher (data.synthetic)", "generated",
        ),
        DatasetInfo(
            "mnist", "image", 10, 60000, 10000, "MNIST handwritten digits, 28x28 grey",
            "split", read=_split(idx, "mnist"),
        ),
        DatasetInfo(
            "fashion-mnist", "image", 10, 60000, 10000, "Fashion-MNIST clothing images, 28x28 grey",
            "split", read=_split(idx, "fashion-mnist"),
        ),
        DatasetInfo(
            "cifar10", "image", 10, 50000, 10000, "CIFAR-10 natural images, 32x32 colour, 10 classes",
            "split", read=_split(cifar, "cifar10"),
        ),
        DatasetInfo(
            "cifar100", "image", 100, 50000, 10000, "CIFAR-100 natural images, 32x32 colour, 100 fine classes",
            "split", read=_split(cifar, "cifar100"),
        ),
        DatasetInfo(
            "svhn", "image", 10, 73257, 26032, "Street View House Numbers digits, 32x32 colour (no extra split)",
            "split", read=svhn.load,
        ),
        DatasetInfo(
            "california", "tabular", 0, 16512, 4128, "California housing, 8 features, regression of house value",
            "pool", pool_size=20640, read=california.load,
        ),
    ]
}


def default_data_root() -> Path:
    """``$RANKBIAS_DATA`` if set, else ``./data`` (absolute, from the current directory)."""
    env = os.environ.get("RANKBIAS_DATA")
    return Path(env).expanduser().absolute() if env else Path.cwd() / "data"


def offline() -> bool:
    """True when ``RANKBIAS_OFFLINE`` is set to 1 (or true/yes/on): never download."""
    return os.environ.get("RANKBIAS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def dataset_size(config: DataConfig) -> tuple[int, int]:
    """``(n_train, n_test)`` that :func:`load_dataset` will return, without reading any file.

    For data sets stored in files this checks against the official full sizes; it is meant for
    validating a config (e.g. ``batch_size <= n_train``) before training. :func:`load_dataset`
    checks again against what the files on disk actually hold. Raises DataError when a size is
    too large.
    """
    info = _info(config.name)
    if info.layout == "pool":
        return _pool_sizes(config, info, info.pool_size, f"{info.name} has {info.pool_size} samples")
    if info.layout == "split":
        return _split_sizes(config, info.train_size, info.test_size, info.name)
    return _pick(config.train_size, info.train_size), _pick(config.test_size, info.test_size)


def load_dataset(config: DataConfig, root: str | Path | None = None, download: bool | None = None) -> Dataset:
    """Load the data set ``config.name``: seeded subsets, standardized, as CPU tensors.

    ``root``: the data root (default :func:`default_data_root`); files are in ``<root>/<name>/``.
    ``download``: fetch missing files; ``None`` means yes unless ``RANKBIAS_OFFLINE=1``.
    Every problem with the data (missing or corrupt files, sizes too large) raises DataError.
    """
    info = _info(config.name)
    root = Path(root).expanduser().absolute() if root is not None else default_data_root()
    download = not offline() if download is None else download
    num_classes = info.num_classes
    if info.layout == "generated":
        num_classes = config.synthetic.classes
        n_train, n_test = dataset_size(config)
        x_train, y_train, x_test, y_test = bundled.synthetic(config.synthetic, n_train, n_test, config.subset_seed)
    else:
        directory = root / info.name
        arrays = info.read(directory, download)
        g = torch.Generator().manual_seed(config.subset_seed)
        if info.layout == "pool":
            x, y = arrays
            where = f"{info.name} has {len(x)} samples" + ("" if info.name == "digits" else f" in {directory}")
            n_train, n_test = _pool_sizes(config, info, len(x), where)
            order = torch.randperm(len(x), generator=g).numpy()
            train_idx, test_idx = order[:n_train], order[len(x) - n_test :]  # disjoint; each ignores the other's size
            _check_labels(y, num_classes, info.name, directory)
            x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        else:
            xtr, ytr, xte, yte = arrays
            if xtr.shape[1:] != xte.shape[1:]:
                raise DataError(f"{directory}: training images are {xtr.shape[1:]} but test images {xte.shape[1:]}")
            n_train, n_test = _split_sizes(config, len(xtr), len(xte), f"{info.name} (the files in {directory})")
            train_idx = torch.randperm(len(xtr), generator=g)[:n_train].numpy()
            test_idx = torch.randperm(len(xte), generator=g)[:n_test].numpy()
            _check_labels(ytr, num_classes, info.name, directory)
            _check_labels(yte, num_classes, info.name, directory)
            x_train, y_train, x_test, y_test = xtr[train_idx], ytr[train_idx], xte[test_idx], yte[test_idx]
    x_train, x_test = (_tensor(a, torch.float32) for a in (x_train, x_test))
    label_type = torch.int64 if num_classes > 0 else torch.float32
    y_train, y_test = (_tensor(a, label_type) for a in (y_train, y_test))
    if info.kind == "image":
        x_train, x_test = (_resize_and_pad(x / info.scale, config.resize, config.pad) for x in (x_train, x_test))
    _standardize(x_train, x_test, config.standardize, info.kind, info.name)
    return Dataset(info.name, x_train, y_train, x_test, y_test, num_classes, info.kind)


# -- helpers --------------------------------------------------------------------------------------
def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"data.name: unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _tensor(a, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``dtype`` from an array or tensor (numpy subsets are fresh copies: no sharing issue)."""
    return a.to(dtype) if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def _split_sizes(config: DataConfig, available_train: int, available_test: int, what: str) -> tuple[int, int]:
    """Sizes for a train/test split: defaults are everything there is."""
    sizes = []
    for key, value, available in (
        ("train", config.train_size, available_train),
        ("test", config.test_size, available_test),
    ):
        n = _pick(value, available)
        if n > available:
            raise DataError(
                f"data.{key}_size: {n} is more than the {available} {key} samples of {what}; at most {available}"
            )
        sizes.append(n)
    return sizes[0], sizes[1]


def _pool_sizes(config: DataConfig, info: DatasetInfo, available: int, where: str) -> tuple[int, int]:
    """Sizes for one pool split into disjoint subsets: the two must fit together."""
    n_train, n_test = _pick(config.train_size, info.train_size), _pick(config.test_size, info.test_size)
    if n_train + n_test <= available:
        return n_train, n_test
    if config.train_size is None and config.test_size is not None and n_train < available:
        raise DataError(
            f"data.test_size: {n_test} is too large: {where}, {n_train} of them go to the training set (the default), "
            f"so at most {available - n_train} remain for testing (set data.train_size/data.test_size)"
        )
    default = "" if config.train_size is not None else " (the default)"
    raise DataError(
        f"data.train_size: {n_train}{default} is too large: {where}, {n_test} of them go to the test set, "
        f"so at most {max(available - n_test, 0)} remain for training (set data.train_size/data.test_size)"
    )


def _resize_and_pad(x: torch.Tensor, size: int | None, pad: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` resized to ``size × size`` (bilinear, antialiased), then padded
    with ``pad`` zero pixels on every side (``data.resize``, ``data.pad``)."""
    if size is not None and tuple(x.shape[2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return torch.nn.functional.pad(x, (pad,) * 4) if pad else x


def _check_labels(y: np.ndarray, num_classes: int, name: str, directory: Path) -> None:
    if num_classes > 0 and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{name}: labels in {directory} range over {y.min()}..{y.max()}, expected 0..{num_classes - 1}")


def _standardize(x_train: torch.Tensor, x_test: torch.Tensor, mode: str, kind: str, name: str) -> None:
    """In place; statistics of the training subset. Constant features/channels become 0."""
    if mode == "auto":
        mode = "channel" if kind == "image" else "feature"
    if mode == "none":
        return
    if mode == "channel":
        if kind != "image":
            raise DataError(
                f"data.standardize: 'channel' needs image data, but {name} is tabular; use 'feature' or 'auto'"
            )
        dims = (0, 2, 3)
    elif mode == "feature":
        dims = (0,)
    else:
        raise DataError(f"data.standardize: unknown mode {mode!r}; use auto, channel, feature or none")
    if len(x_train) == 0:
        return
    var, mean = torch.var_mean(x_train, dim=dims, keepdim=True, correction=0)
    constant = x_train.amax(dim=dims, keepdim=True) == x_train.amin(dim=dims, keepdim=True)
    mean = torch.where(constant, x_train.amin(dim=dims, keepdim=True), mean)  # exact: constant -> 0
    std = torch.where(constant, torch.ones_like(var), var.sqrt())
    for x in (x_train, x_test):
        x.sub_(mean).div_(std)
