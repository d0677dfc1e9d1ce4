"""Small stored sweeps shared by test_plots.py and test_report.py (seconds to train)."""

from __future__ import annotations

from pathlib import Path

import rankbias as rb
from rankbias.store.run_store import RunStore

BASE = {
    "model": "mlp-bn-3-16",
    "data": {"name": "digits", "train_size": 256, "test_size": 64},
    "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
    "train": {"batch_size": 32, "epochs": 3},
    "record": {"every": 1},
}
BATCHES = (16, 32)
DECAYS = (0.0, 5e-3)


def grid_configs() -> list[rb.RunConfig]:
    """2 × 2: batch size × weight decay, mlp-bn-3-16 on a digits subset, 3 epochs."""
    base = rb.RunConfig.from_dict(BASE)
    return [base.replace(**{"train.batch_size": b, "optimizer.weight_decay": w}) for b in BATCHES for w in DECAYS]


def build_grid(root: Path) -> Path:
    rb.train(grid_configs(), root)
    return root


def build_with_problems(root: Path) -> tuple[Path, str, str]:
    """The grid, one run that diverges (μ = 1e6) and one that failed before its first record."""
    base = rb.RunConfig.from_dict(BASE)
    diverged = base.replace(**{"optimizer.lr": 1e6, "train.batch_size": 16})
    rb.train([*grid_configs(), diverged], root)
    failed = base.replace(**{"train.seed": 7})
    store = RunStore(root, failed.run_id())
    store.write_config(failed.to_dict())
    store.set_status("failed", None, "RuntimeError: CUDA out of memory (written by the test)")
    return root, diverged.run_id(), failed.run_id()


def build_regression(root: Path) -> Path:
    """CHEN's setting in small: twolayer-32 on synthetic regression, λ ∈ {0, 1e-3, 1e-2}."""
    base = rb.RunConfig.from_dict(
        {
            "model": "twolayer-32",
            "data": {"name": "synthetic", "train_size": 128, "test_size": 64, "synthetic": {"classes": 0, "dim": 8}},
            "loss": "mse_scalar",
            "optimizer": {"lr": 0.01},
            "train": {"batch_size": 16, "epochs": 3},
        }
    )
    rb.train([base.replace(**{"optimizer.weight_decay": w}) for w in (0.0, 1e-3, 1e-2)], root)
    return root


def build_step_norms(root: Path) -> Path:
    """Plain SGD (momentum 0) recording step norms, so GSGP Lemma 3.2 applies: mlp-bn-2-16 on a
    digits subset, B ∈ {8, 32} with weight decay, 2 epochs."""
    base = rb.RunConfig.from_dict(
        {
            "model": "mlp-bn-2-16",
            "data": {"name": "digits", "train_size": 128, "test_size": 64},
            "optimizer": {"lr": 0.1, "momentum": 0.0, "weight_decay": 5e-3},
            "train": {"batch_size": 8, "epochs": 2},
            "record": {"step_norms": 3},
        }
    )
    rb.train([base, base.replace(**{"train.batch_size": 32})], root)
    return root


SEEDS = (0, 1, 2)


def build_seeds(root: Path) -> Path:
    """2 settings (λ ∈ {0, 5e-3}) × 3 seed replicates (``train.seed`` and ``data.subset_seed``
    together), mlp-bn-3-16 on a digits subset, 3 epochs."""
    base = rb.RunConfig.from_dict(BASE)
    replicate = lambda w, s: base.replace(**{"optimizer.weight_decay": w, "train.seed": s, "data.subset_seed": s})
    rb.train([replicate(w, s) for w in DECAYS for s in SEEDS], root)
    return root
