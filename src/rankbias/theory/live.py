"""A stored run's network, data and random batches, for the checks that need gradients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset, load_dataset
from ..errors import ConfigError
from ..store.run_store import RunStore


@dataclass
class LiveRun:
    """``model``: the network at its last checkpoint (``rb.load_model``), ``epoch``: that
    checkpoint's epoch, ``data``: the run's data set, ``config``: its config."""

    run_id: str
    config: RunConfig
    model: nn.Module
    data: Dataset
    epoch: int


def live_run(run_dir: str | Path, data_root: str | Path | None = None) -> LiveRun:
    """Load a stored run's network and data (the same data the run trained on)."""
    from ..api import load_model

    store = RunStore.at(run_dir)
    config, status = store.read_config(), store.status() or {}
    model = load_model(run_dir)
    data = load_dataset(config.data, data_root)
    return LiveRun(store.run_id, config, model, data, int(status.get("epoch") or 0))


def random_batches(n: int, size: int, count: int | None, seed: int) -> list[torch.Tensor]:
    """``count`` disjoint batches of ``size`` indices out of ``n`` (all full batches of one
    random epoch when ``count`` is None), from a seeded permutation."""
    if not 1 <= size <= n:
        raise ConfigError("batch_size", f"must be between 1 and the training set's {n} samples, got {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = list(order[: n - n % size].view(-1, size))
    if count is not None:
        if count < 1:
            raise ConfigError("batches", f"need at least one batch, got {count}")
        batches = batches[:count]
    return batches
