"""Tests of rankbias.data: small files in the real formats, written into tmp_path; no network."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import scipy.io
import torch

from rankbias.config import DataConfig, SyntheticConfig
from rankbias.data import DATASETS, Dataset, cifar, dataset_size, default_data_root, idx, load_dataset
from rankbias.errors import DataError

CAL_COLUMNS = "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"


# -- writers for the on-disk formats ----------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def tagged_images(n, shape, rng):
    """Random uint8 images whose first value is the sample's index (to find it after subsetting)."""
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(n)
    return images


def make_mnist(directory, n_train=30, n_test=12, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = tagged_images(n, (28, 28), rng)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


def cifar_batch(n, label_key, classes, rng):
    data = tagged_images(n, (3072,), rng)
    return {b"batch_label": b"test", label_key: rng.integers(0, classes, size=n).tolist(), b"data": data}


def make_cifar10(root, n_per_batch=8, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batches[name] = cifar_batch(n, b"labels", 10, rng)
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    return batches


def make_cifar100(root, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in (("train", n_train), ("test", n_test)):
        batches[name] = cifar_batch(n, b"fine_labels", 100, rng)
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    return batches


def make_svhn(root, n_train=15, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    directory = root / "svhn"
    directory.mkdir(parents=True)
    mats = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        x[0, 0, 0, :] = np.arange(n)
        y = np.arange(n).reshape(n, 1) % 10 + 1  # 1..10, 10 = digit 0
        scipy.io.savemat(directory / name, {"X": x, "y": y.astype(np.uint8)})
        mats[name] = (x, y)
    return mats


def make_california(root, n=100, seed=0, header=CAL_COLUMNS, constant_column=None):
    rng = np.random.default_rng(seed)
    directory = root / "california"
    directory.mkdir(parents=True, exist_ok=True)
    table = rng.normal(size=(n, 9)) * 3 + 1
    table[:, 0] = np.arange(n)  # MedInc = row id
    if constant_column is not None:
        table[:, constant_column] = 7.5
    lines = [header] + [",".join(repr(float(v)) for v in row) for row in table]
    (directory / "california_housing.csv").write_text("\n".join(lines) + "\n")
    return table


def find_tag(x: torch.Tensor) -> np.ndarray:
    """The index stored in each sample's first value by tagged_images (standardize='none')."""
    return np.rint(x.reshape(len(x), -1)[:, 0].numpy() * 255).astype(int)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test may download or read a real data root."""
    monkeypatch.setenv("RANKBIAS_OFFLINE", "1")
    monkeypatch.setenv("RANKBIAS_DATA", str(tmp_path / "no-such-root"))


# -- registry, roots ------------------------------------------------------------------------------
def test_registry():
    names = {"digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "california"}
    assert set(DATASETS) == names
    for name, info in DATASETS.items():
        assert info.name == name and info.kind in ("image", "tabular") and info.description
        assert info.train_size > 0 and info.test_size > 0
    assert DATASETS["california"].num_classes == 0 and DATASETS["cifar100"].num_classes == 100
    DataConfig(name="svhn").validate("data")


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKBIAS_DATA", str(tmp_path / "elsewhere"))
    assert default_data_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("RANKBIAS_DATA")
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == tmp_path / "data"


def test_env_root_is_used(monkeypatch, tmp_path):
    make_mnist(tmp_path / "mnist")
    monkeypatch.setenv("RANKBIAS_DATA", str(tmp_path))
    assert len(load_dataset(DataConfig(name="mnist")).x_train) == 30


def test_unknown_name():
    with pytest.raises(DataError, match="data.name"):
        load_dataset(DataConfig(name="imagenet"))


# -- digits ---------------------------------------------------------------------------------------
def test_digits_defaults_and_standardization():
    data = load_dataset(DataConfig(name="digits"))
    assert isinstance(data, Dataset) and data.kind == "image" and data.num_classes == 10
    assert data.x_train.shape == (1497, 1, 8, 8) and data.x_test.shape == (300, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.input_shape == (1, 8, 8)
    assert set(data.y_train.tolist()) == set(range(10))
    assert data.x_train.mean().abs() < 1e-5 and (data.x_train.std(correction=0) - 1).abs() < 1e-4
    assert dataset_size(DataConfig(name="digits")) == (1497, 300)
    moved = data.to("cpu")
    assert moved.x_test.device.type == "cpu" and moved.name == "digits"


def test_digits_none_is_unit_range_and_feature_zeroes_constant_pixels():
    raw = load_dataset(DataConfig(name="digits", standardize="none"))
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1
    feature = load_dataset(DataConfig(name="digits", standardize="feature"))
    flat = feature.x_train.reshape(len(feature.x_train), -1)
    constant = raw.x_train.reshape(len(raw.x_train), -1).std(dim=0) == 0
    assert constant.any() and (flat[:, constant] == 0).all()
    assert (flat[:, ~constant].mean(dim=0).abs() < 1e-5).all()
    assert ((flat[:, ~constant].std(dim=0, correction=0) - 1).abs() < 1e-4).all()


def test_digits_subsets_deterministic_and_disjoint():
    config = DataConfig(name="digits", train_size=1000, test_size=797, subset_seed=3, standardize="none")
    a, b = load_dataset(config), load_dataset(config)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    other = load_dataset(DataConfig(name="digits", train_size=1000, test_size=797, subset_seed=4, standardize="none"))
    assert not torch.equal(a.x_train, other.x_train)
    # train + test use the whole pool exactly once: together they are all 1797 digits (as a multiset)
    from sklearn.datasets import load_digits

    rows = torch.cat([a.x_train, a.x_test]).reshape(1797, -1) * 16
    pool = torch.from_numpy(load_digits().data).float()
    counted = [torch.unique(r, dim=0, return_counts=True) for r in (rows, pool)]
    for left, right in zip(*counted):
        assert torch.equal(left, right)


def test_digits_too_large():
    with pytest.raises(DataError, match=r"data\.train_size.*at most 1497"):
        load_dataset(DataConfig(name="digits", train_size=1700))
    with pytest.raises(DataError, match=r"data\.train_size.*at most 1497"):
        dataset_size(DataConfig(name="digits", train_size=1700))
    with pytest.raises(DataError, match=r"data\.test_size.*at most 300"):
        dataset_size(DataConfig(name="digits", test_size=301))
    assert dataset_size(DataConfig(name="digits", train_size=1797 - 200, test_size=200)) == (1597, 200)


# -- synthetic ------------------------------------------------------------------------------------
def test_synthetic_classification():
    config = DataConfig(name="synthetic", train_size=300, test_size=100, synthetic=SyntheticConfig(dim=12, classes=4))
    data = load_dataset(config)
    assert data.kind == "tabular" and data.num_classes == 4 and data.input_shape == (12,)
    assert data.x_train.shape == (300, 12) and data.y_train.shape == (300,) and data.y_test.shape == (100,)
    assert data.y_train.dtype == torch.int64 and set(data.y_train.tolist()) == {0, 1, 2, 3}
    assert (data.x_train.mean(0).abs() < 1e-5).all() and ((data.x_train.std(0, correction=0) - 1).abs() < 1e-4).all()
    assert dataset_size(config) == (300, 100)
    again = load_dataset(config)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test)
    other = load_dataset(DataConfig(**{**config.__dict__, "subset_seed": 1}))
    assert not torch.equal(data.x_train, other.x_train)
    # the test set does not depend on the training set's size
    bigger = load_dataset(DataConfig(**{**config.__dict__, "train_size": 500, "standardize": "none"}))
    raw = load_dataset(DataConfig(**{**config.__dict__, "standardize": "none"}))
    assert torch.equal(bigger.x_test, raw.x_test) and torch.equal(bigger.x_train[:300], raw.x_train)


def test_synthetic_labels_come_from_a_fixed_teacher():
    """Different subset seeds draw new samples of the same task: equal inputs, equal labels."""
    synth = SyntheticConfig(dim=5, classes=3, teacher_width=16)
    a = load_dataset(DataConfig(name="synthetic", subset_seed=0, standardize="none", synthetic=synth))
    b = load_dataset(DataConfig(name="synthetic", subset_seed=1, standardize="none", synthetic=synth))
    x = torch.cat([a.x_train, b.x_train])
    y = torch.cat([a.y_train, b.y_train])
    nn = torch.cdist(b.x_train, a.x_train).argmin(dim=1)  # nearest neighbours mostly share the label
    assert (a.y_train[nn] == b.y_train).float().mean() > 0.6
    assert len(torch.unique(y)) == 3 and len(x) == 2000


def test_synthetic_regression_and_noise():
    synth = SyntheticConfig(dim=8, classes=0, noise=0.0)
    clean = load_dataset(DataConfig(name="synthetic", train_size=400, test_size=50, synthetic=synth))
    assert clean.num_classes == 0 and clean.y_train.dtype == torch.float32 and clean.y_train.shape == (400,)
    assert 0.2 < clean.y_train.std() < 3
    noisy = load_dataset(DataConfig(name="synthetic", train_size=400, test_size=50,
                                    synthetic=SyntheticConfig(dim=8, classes=0, noise=0.5)))
    assert torch.equal(clean.x_train, noisy.x_train)
    assert 0.4 < (noisy.y_train - clean.y_train).std() < 0.6


def test_synthetic_is_fast_for_mnist_sized_inputs():
    import time

    start = time.perf_counter()
    data = load_dataset(DataConfig(name="synthetic", train_size=20000, synthetic=SyntheticConfig(dim=784)))
    assert data.x_train.shape == (20000, 784)
    assert time.perf_counter() - start < 5


def test_channel_standardization_needs_images():
    with pytest.raises(DataError, match="data.standardize"):
        load_dataset(DataConfig(name="synthetic", standardize="channel"))


# -- MNIST / Fashion-MNIST ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_loading(tmp_path, name, gz):
    arrays = make_mnist(tmp_path / name, gz=gz)
    data = load_dataset(DataConfig(name=name, standardize="none"), root=tmp_path, download=False)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (12, 1, 28, 28)
    assert data.y_train.dtype == torch.int64 and data.x_train.dtype == torch.float32 and data.num_classes == 10
    splits = ((data.x_train, data.y_train, arrays["train"]), (data.x_test, data.y_test, arrays["t10k"]))
    for x, y, (images, labels) in splits:
        tags = find_tag(x)
        assert sorted(tags) == list(range(len(images)))  # default: all samples, each once
        assert torch.equal(x, torch.from_numpy(images[tags][:, None]).float() / 255)
        assert y.tolist() == labels[tags].tolist()


def test_idx_subsets_and_standardization(tmp_path):
    make_mnist(tmp_path / "mnist", n_train=50, n_test=20)
    config = DataConfig(name="mnist", train_size=20, test_size=5, subset_seed=1)
    data = load_dataset(config, root=tmp_path, download=False)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (5, 1, 28, 28)
    assert dataset_size(config) == (20, 5)
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std(correction=0)) - 1) < 1e-4
    def raw(seed):
        config = DataConfig(name="mnist", train_size=20, subset_seed=seed, standardize="none")
        return find_tag(load_dataset(config, root=tmp_path, download=False).x_train)

    assert list(raw(1)) == list(raw(1)) and set(raw(1)) != set(raw(2))
    with pytest.raises(DataError, match=r"data\.train_size: 51 .*at most 50"):
        load_dataset(DataConfig(name="mnist", train_size=51), root=tmp_path, download=False)
    with pytest.raises(DataError, match=r"data\.train_size: 60001 .*at most 60000"):
        dataset_size(DataConfig(name="mnist", train_size=60001))
    assert dataset_size(DataConfig(name="mnist")) == (60000, 10000)


def test_idx_prefers_raw_over_gz(tmp_path):
    make_mnist(tmp_path / "mnist", gz=True)
    make_mnist(tmp_path / "mnist", n_train=40, gz=False)
    assert len(load_dataset(DataConfig(name="mnist"), root=tmp_path, download=False).x_train) == 40


# -- CIFAR ----------------------------------------------------------------------------------------
def test_cifar10(tmp_path):
    batches = make_cifar10(tmp_path)
    data = load_dataset(DataConfig(name="cifar10", standardize="none"), root=tmp_path, download=False)
    assert data.x_train.shape == (40, 3, 32, 32) and data.x_test.shape == (10, 3, 32, 32) and data.num_classes == 10
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    train_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]
    # tags repeat per batch file (0..7): identify samples by their full content instead
    flat = np.rint(data.x_train.reshape(40, -1).numpy() * 255).astype(np.uint8)
    order = [int(np.flatnonzero((train_data == row).all(axis=1))[0]) for row in flat]
    assert sorted(order) == list(range(40))
    assert data.y_train.tolist() == [train_labels[i] for i in order]
    # channel-major layout: value k of a row is channel k // 1024, row (k % 1024) // 32, column k % 32
    first = train_data[order[0]]
    assert data.x_train[0, 1, 2, 3] * 255 == pytest.approx(first[1024 + 2 * 32 + 3])
    standardized = load_dataset(DataConfig(name="cifar10"), root=tmp_path, download=False).x_train
    assert (standardized.mean(dim=(0, 2, 3)).abs() < 1e-5).all()
    assert ((standardized.std(dim=(0, 2, 3), correction=0) - 1).abs() < 1e-4).all()


def test_cifar100(tmp_path):
    batches = make_cifar100(tmp_path)
    data = load_dataset(DataConfig(name="cifar100", standardize="none", test_size=4), root=tmp_path, download=False)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32) and data.num_classes == 100
    tags = find_tag(data.x_train)
    assert data.y_train.tolist() == [batches["train"][b"fine_labels"][t] for t in tags]
    expected = torch.from_numpy(batches["train"][b"data"][tags].reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(data.x_train, expected)


# -- SVHN -----------------------------------------------------------------------------------------
def test_svhn(tmp_path):
    mats = make_svhn(tmp_path)
    data = load_dataset(DataConfig(name="svhn", standardize="none"), root=tmp_path, download=False)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (7, 3, 32, 32)
    x, y = mats["train_32x32.mat"]
    tags = find_tag(data.x_train)
    assert torch.equal(data.x_train, torch.from_numpy(x[..., tags].transpose(3, 2, 0, 1).copy()).float() / 255)
    expected = y[tags, 0] % 10  # label 10 is the digit 0
    assert data.y_train.tolist() == expected.tolist() and 0 in data.y_train.tolist() and 10 not in data.y_train.tolist()


# -- California -----------------------------------------------------------------------------------
def test_california_csv(tmp_path):
    table = make_california(tmp_path, n=100, constant_column=3)
    config = DataConfig(name="california", train_size=70, test_size=30, standardize="none")
    data = load_dataset(config, root=tmp_path, download=False)
    assert data.kind == "tabular" and data.num_classes == 0 and data.input_shape == (8,)
    assert data.y_train.dtype == torch.float32 and data.x_train.dtype == torch.float32
    train_ids, test_ids = data.x_train[:, 0].long().tolist(), data.x_test[:, 0].long().tolist()
    assert not set(train_ids) & set(test_ids) and sorted(train_ids + test_ids) == list(range(100))
    assert np.allclose(data.x_train.numpy(), table[train_ids, :8])
    assert np.allclose(data.y_train.numpy(), table[train_ids, 8])
    assert dataset_size(config) == (70, 30)

    std = load_dataset(DataConfig(name="california", train_size=60, test_size=40), root=tmp_path, download=False)
    assert (std.x_train[:, 3] == 0).all() and (std.x_test[:, 3] == 0).all()  # constant feature -> 0
    others = [0, 1, 2, 4, 5, 6, 7]
    assert (std.x_train[:, others].mean(0).abs() < 1e-5).all()
    assert ((std.x_train[:, others].std(0, correction=0) - 1).abs() < 1e-4).all()


def test_california_subsets_independent_and_deterministic(tmp_path):
    make_california(tmp_path, n=100)
    def load(**sizes):
        return load_dataset(DataConfig(name="california", standardize="none", **sizes), root=tmp_path, download=False)

    a, b = load(train_size=50, test_size=20), load(train_size=50, test_size=20)
    assert torch.equal(a.x_train, b.x_train)
    assert torch.equal(load(train_size=10, test_size=20).x_test, a.x_test)  # test set ignores train_size
    assert not torch.equal(load(train_size=50, test_size=20, subset_seed=5).x_train, a.x_train)
    with pytest.raises(DataError, match=r"data\.train_size: 16512 \(the default\).*at most 80"):
        load(test_size=20)
    with pytest.raises(DataError, match=r"data\.train_size: 90 .*at most 80"):
        load(train_size=90, test_size=20)
    assert dataset_size(DataConfig(name="california")) == (16512, 4128)


# -- missing files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expect",
    [
        ("mnist", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "ossci-datasets.s3.amazonaws.com"]),
        ("fashion-mnist", ["train-labels-idx1-ubyte", "fashion-mnist.s3-website"]),
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch", "cifar-10-python.tar.gz"]),
        ("cifar100", ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python.tar.gz"]),
        ("svhn", ["train_32x32.mat", "test_32x32.mat", "ufldl.stanford.edu/housenumbers/"]),
        ("california", ["california_housing.csv", "figshare"]),
    ],
)
def test_missing_files_offline(tmp_path, name, expect):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name=name), root=tmp_path)  # download=None + RANKBIAS_OFFLINE=1
    message = str(info.value)
    assert repr(name) in message and str(tmp_path / name) in message and "downloading is off" in message
    for piece in expect:
        assert piece in message
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_only_the_missing_files_are_named(tmp_path):
    make_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist"), root=tmp_path, download=False)
    assert "t10k-labels-idx1-ubyte" in str(info.value) and "train-images" not in str(info.value)


# -- downloading (file:// URLs stand in for the servers) ------------------------------------------
def test_download_idx_from_url(tmp_path, monkeypatch):
    server = tmp_path / "server"
    make_mnist(server, gz=True)
    monkeypatch.setitem(idx.URLS, "mnist", server.as_uri() + "/")
    data = load_dataset(DataConfig(name="mnist"), root=tmp_path / "root", download=True)
    assert data.x_train.shape == (30, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(p.name for p in server.iterdir())


def test_download_cifar_archive(tmp_path, monkeypatch):
    make_cifar10(tmp_path / "build")
    archive = tmp_path / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar10" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    folder, train, test, key, _ = cifar.LAYOUTS["cifar10"]
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10", (folder, train, test, key, archive.as_uri()))
    monkeypatch.delenv("RANKBIAS_OFFLINE")
    data = load_dataset(DataConfig(name="cifar10"), root=tmp_path / "root")
    assert data.x_train.shape == (40, 3, 32, 32)
    # the archive is unpacked and removed
    assert sorted(p.name for p in (tmp_path / "root" / "cifar10").iterdir()) == ["cifar-10-batches-py"]


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.URLS, "mnist", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist"), root=tmp_path / "root", download=True)
    message = str(info.value)
    assert "failed" in message and str(tmp_path / "root" / "mnist") in message and "train-images-idx3-ubyte" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not list((tmp_path / "root" / "mnist").glob("*.part"))


# -- corrupt files --------------------------------------------------------------------------------
def corrupt_idx(directory, how):
    make_mnist(directory)
    images = directory / "train-images-idx3-ubyte"
    if how == "magic":
        images.write_bytes(b"\x00\x00\x08\x01" + images.read_bytes()[4:])
        return "magic number"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
        return "truncated"
    if how == "header":
        images.write_bytes(images.read_bytes()[:10])
        return "header"
    if how == "gzip":
        images.unlink()
        images = tagged_images(30, (28, 28), np.random.default_rng(0))
        (directory / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images))[:500])
        return "cannot be read"
    if how == "count":
        write_idx(directory / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
        return "29 labels"
    if how == "size":
        write_idx(images, np.zeros((30, 20, 20), np.uint8))
        return "28x28"
    if how == "labels":
        write_idx(directory / "train-labels-idx1-ubyte", np.full(30, 12, np.uint8))
        return "expected 0..9"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["magic", "truncated", "header", "gzip", "count", "size", "labels"])
def test_corrupt_idx(tmp_path, how):
    expected = corrupt_idx(tmp_path / "mnist", how)
    with pytest.raises(DataError, match=expected) as info:
        load_dataset(DataConfig(name="mnist"), root=tmp_path, download=False)
    if how not in ("labels",):
        assert "train-" in str(info.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a pickle", "not a readable CIFAR pickle"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20], "not a readable CIFAR pickle"),
        (pickle.dumps([1, 2, 3]), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "no b'labels' entry"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"\(N, 3072\) uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}), "not integer labels"),
    ],
)
def test_corrupt_cifar(tmp_path, content, expected):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        load_dataset(DataConfig(name="cifar10"), root=tmp_path, download=False)
    assert str(bad) in str(info.value)


def test_cifar100_needs_fine_labels(tmp_path):
    make_cifar100(tmp_path)
    bad = tmp_path / "cifar100" / "cifar-100-python" / "test"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="fine_labels"):
        load_dataset(DataConfig(name="cifar100"), root=tmp_path, download=False)


def savemat_bytes(variables):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"garbage, not MATLAB", "not a readable .mat file"),
        (savemat_bytes({"X": np.zeros((32, 32, 3, 2), np.uint8)}), "no variable 'y'"),
        (savemat_bytes({"images": np.zeros(3)}), "no variable 'X'"),
        (savemat_bytes({"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))}), r"\(32, 32, 3, N\)"),
        (savemat_bytes({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))}), "must hold 2 labels"),
        (savemat_bytes({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [11]])}), "1..10"),
    ],
)
def test_corrupt_svhn(tmp_path, content, expected):
    make_svhn(tmp_path)
    bad = tmp_path / "svhn" / "test_32x32.mat"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        load_dataset(DataConfig(name="svhn"), root=tmp_path, download=False)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a,b,c\n1,2,3\n", "columns are a,b,c"),
        (CAL_COLUMNS.replace("MedHouseVal", "Price") + "\n" + ",".join(["1"] * 9) + "\n", "expected MedInc"),
        (CAL_COLUMNS + "\n" + ",".join(["1"] * 8) + "\n", "line 2: 8 values"),
        (CAL_COLUMNS + "\n" + ",".join(["1"] * 9) + "\n" + ",".join(["x"] * 9) + "\n", "line 3: not all values"),
        (CAL_COLUMNS + "\n", "no data rows"),
        ("", "columns are \\(none\\)"),
        (CAL_COLUMNS + "\n" + ",".join(["nan"] * 9) + "\n", "NaN"),
    ],
)
def test_corrupt_california(tmp_path, text, expected):
    path = tmp_path / "california" / "california_housing.csv"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(DataError, match=expected) as info:
        load_dataset(DataConfig(name="california", train_size=1, test_size=1), root=tmp_path, download=False)
    assert str(path) in str(info.value)
