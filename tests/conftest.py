import os

import pytest
import torch

import rankbias as rb


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Tests never download and never write outside tmp_path."""
    monkeypatch.setenv("RANKBIAS_OFFLINE", "1")
    monkeypatch.setenv("RANKBIAS_DATA", str(tmp_path / "data"))
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
