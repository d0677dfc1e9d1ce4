import os

import pytest
import torch

import rankbias as rb


@pytest.fixture(scope="session")
def native_cache(tmp_path_factory):
    """One cache of the native library for the session: built once, in pytest's own folder."""
    return tmp_path_factory.mktemp("native-cache")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path, native_cache):
    """Tests never download and never write outside pytest's folders."""
    monkeypatch.setenv("RANKBIAS_OFFLINE", "1")
    monkeypatch.setenv("RANKBIAS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RANKBIAS_CACHE", str(native_cache))
    torch.set_num_threads(int(os.environ.get("RANKBIAS_TEST_THREADS", "2")))


def small_config(**overrides) -> rb.RunConfig:
    """A seconds-long run on a digits subset: mlp-bn-2-16, 3 epochs."""
    base = {
        "model": "mlp-bn-2-16",
        "data": {"name": "digits", "train_size": 256, "test_size": 64},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
        "train": {"batch_size": 32, "epochs": 3},
    }
    return rb.RunConfig.from_dict(base).replace(**overrides)
