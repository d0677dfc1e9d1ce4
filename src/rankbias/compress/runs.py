"""Compression of stored runs: each run's last checkpoint factorized at one or more ε
(:func:`rankbias.compress.factorize.compress`), evaluated before and after on the run's own data,
and stored next to the run (``RunStore.compress_dir``, see ``docs/compress.md``).

The papers' point (GSGP Sec. 1 and 4, GP Sec. 1) is that SGD with weight decay leaves weight
matrices close to low rank; this cashes it in without retraining.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..api import load_model
from ..config import flatten
from ..data import load_dataset
from ..errors import ConfigError, NotFoundError
from ..options import resolve_device
from ..spectra.measures import NORMS
from ..store.catalog import run_dirs
from ..store.io import replace_from, writing
from ..store.records import varied_keys
from ..store.run_store import RunStore, is_run
from ..training.losses import member_correct, member_losses
from .factorize import LAYER_COLUMNS, compress

EVAL_BATCH = 500  # samples per forward pass when evaluating a compressed run
SUMMARY_COLUMNS = [
    "run_id", "eps", "norm", "params_before", "params_after", "matrix_params_before", "matrix_params_after",
    "flops_before", "flops_after", "layers_compressed", "layers_kept",
    "test_acc_before", "test_acc_after", "test_loss_before", "test_loss_after",
    "train_acc_before", "train_acc_after", "train_loss_before", "train_loss_after",
]


MAX_SWEEP = 1000  # values of ε in one --sweep-eps: each compresses and evaluates every run once


def parse_sweep(text: str) -> list[float]:
    """``"1e-4:1e-1:13"`` → 13 values of ε, evenly spaced in log scale from 1e-4 to 1e-1."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ConfigError("sweep_eps", f"must look like LOW:HIGH:COUNT (e.g. 1e-4:1e-1:13), got {text!r}") from None
    if not 0 < low <= high < 1 or not 1 <= count <= MAX_SWEEP:
        raise ConfigError("sweep_eps", f"needs 0 < LOW <= HIGH < 1 and 1 <= COUNT <= {MAX_SWEEP}, got {text!r}")
    return [float(v) for v in np.logspace(np.log10(low), np.log10(high), count)]


def compress_run(
    path: str | Path,
    eps: float | Iterable[float] | None = None,
    norm: str | None = None,
    *,
    sweep_eps: str | None = None,
    device: str = "cpu",
    data_root: str | Path | None = None,
    store: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Compress a stored run (or every run under a results directory) at one or more ε.

    ``eps``: a value or a list (default: each run's ``record.eps``); ``sweep_eps``: ``"LOW:HIGH:N"``,
    N log-spaced values (instead of ``eps``). ``norm``: default each run's ``record.norm``.
    Each run's network (its last checkpoint) is compressed with :func:`compress` and evaluated,
    before and after, on the run's own training and test sets in eval mode with the run's loss.
    With ``store``, each run's result is written to ``<run>/compress/`` (see :func:`read_compressed`).
    ``progress``: a bar over runs × ε on a terminal (stderr).

    Returns one row per run and ε (columns :data:`SUMMARY_COLUMNS`, then the run's state and, for
    several runs, the config keys that differ between them); runs without a checkpoint are
    skipped with a warning (an error for a single run directory).
    """
    if eps is not None and sweep_eps is not None:
        raise ConfigError("sweep_eps", "give eps or sweep_eps, not both")
    values = parse_sweep(sweep_eps) if sweep_eps is not None else eps
    if values is not None:
        values = [float(values)] if np.isscalar(values) else [float(v) for v in values]
        bad = [v for v in values if not 0 < v < 1]
        if bad or not values:
            raise ConfigError("eps", f"must be in (0, 1), got {bad[0] if bad else 'an empty list'}")
    if norm is not None and norm not in NORMS:
        raise ConfigError("norm", f"must be one of {NORMS}, got {norm!r}")
    torch_device = resolve_device(device)
    stores = [RunStore.at(d) for d in run_dirs(path)]
    # everything that can fail on bad input (configs, data files) is checked before any run is compressed
    runs, datasets = [], {}
    for run in stores:
        if run.is_tracked():  # a user's loop recorded by rb.Tracker: its network is the user's
            message = f"{run.run_id} was recorded by rb.Tracker and stores no network: rb.compress(your_model, eps)"
            if Path(path) == run.dir:
                raise NotFoundError(message)
            warnings.warn(f"{message}; not compressed", stacklevel=2)
            continue
        if not run.has_checkpoint():
            if Path(path) == run.dir:
                raise NotFoundError(f"{run.dir} has no checkpoint (the run never reached its first record)")
            warnings.warn(f"{run.run_id}: no checkpoint, not compressed", stacklevel=2)
            continue
        config = run.read_config()
        if config.data not in datasets:
            datasets[config.data] = load_dataset(config.data, data_root)
        runs.append((run, config, datasets[config.data]))
    if not runs:
        raise NotFoundError(f"no run under {path} has a checkpoint")
    from tqdm.auto import tqdm

    total = len(runs) * (len(values) if values is not None else 1)
    with tqdm(total=total, desc="compress", unit="ε", disable=None if progress and total > 1 else True) as bar:
        tables = [_compress_one(*run, values, norm, torch_device, store, bar) for run in runs]
    return _with_settings(pd.concat(tables, ignore_index=True), stores)


def _compress_one(run: RunStore, config, data, values, norm, device, store, bar) -> pd.DataFrame:
    norm = norm or config.record.norm
    model = load_model(run.dir).to(device)
    before = evaluate(model, data, config.loss, device)
    params_before = _count(model)
    rows, layer_tables = [], []
    for eps in values if values is not None else [config.record.eps]:
        small, layers = compress(model, eps, norm, input_shape=data.input_shape)
        after = evaluate(small, data, config.loss, device)
        rows.append({
            "run_id": run.run_id, "eps": eps, "norm": norm,
            "params_before": params_before, "params_after": _count(small),
            "matrix_params_before": int(layers["params_before"].sum()),
            "matrix_params_after": int(layers["params_after"].sum()),
            "flops_before": float(layers["flops_before"].sum()), "flops_after": float(layers["flops_after"].sum()),
            "layers_compressed": int(layers["compressed"].sum()), "layers_kept": int((~layers["compressed"]).sum()),
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
        })
        layer_tables.append(layers.assign(run_id=run.run_id, eps=eps, norm=norm))
        bar.update()
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if store:
        _store(run, summary, layer_tables)
    return summary.assign(state=(run.status() or {}).get("state"))


@torch.no_grad()
def evaluate(model: nn.Module, data, loss: str, device: torch.device | str = "cpu") -> dict[str, float]:
    """Loss and accuracy of a plain module on a data set's train and test sets, in eval mode.

    The same loss and accuracy as the training records (:mod:`rankbias.training.losses`).
    """
    was_training = model.training
    model.eval()
    out = {}
    try:
        for split in ("train", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            loss_sum = correct = 0.0
            for s in range(0, len(x), EVAL_BATCH):
                xb, yb = x[s : s + EVAL_BATCH].to(device), y[s : s + EVAL_BATCH].to(device)
                logits = model(xb)[None]  # (1, B, outputs): the engine's cohort layout
                loss_sum += float(member_losses(loss, logits, yb[None])[0]) * len(xb)
                correct += float(member_correct(loss, logits, yb[None], data.num_classes)[0])
            out[f"{split}_acc"], out[f"{split}_loss"] = correct / len(x), loss_sum / len(x)
    finally:
        model.train(was_training)
    return {k: out[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss")}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _with_settings(table: pd.DataFrame, stores: list[RunStore]) -> pd.DataFrame:
    """Add the config keys that differ between the runs (the sweep's axes)."""
    if table["run_id"].nunique() < 2:
        return table
    runs = pd.DataFrame([{"run_id": s.run_id, **flatten(s.read_config().to_dict())} for s in stores])
    runs = runs[runs["run_id"].isin(table["run_id"])]
    keys = varied_keys(runs)
    return table.merge(runs[["run_id", *keys]], on="run_id", how="left")


def _file_stem(eps: float, norm: str) -> str:
    return f"eps_{eps:.6e}_{norm}"


def _store(run: RunStore, summary: pd.DataFrame, layer_tables: list[pd.DataFrame]) -> None:
    folder = run.compress_dir
    with writing(folder):  # a full or read-only disk: one StoreError, earlier files as they were
        folder.mkdir(exist_ok=True)
        for (_, row), layers in zip(summary.iterrows(), layer_tables):
            stem = _file_stem(row["eps"], row["norm"])
            _write(summary[summary["eps"] == row["eps"]], folder / f"{stem}.parquet")
            _write(layers.assign(shape=layers["shape"].map(list)), folder / f"{stem}.layers.parquet")


def _write(table: pd.DataFrame, path: Path) -> None:
    """``table`` into ``path`` whole or not at all (written beside it, then renamed)."""
    replace_from(lambda tmp: table.to_parquet(tmp, index=False), path)


def read_compressed(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored compression results of a run or of every run under a results directory.

    Returns ``(summary, layers)``: one row per run, ε and norm (:data:`SUMMARY_COLUMNS`, then
    the config keys that differ between the runs, as :func:`compress_run` gives them), and
    one row per run, ε, norm and layer (:data:`LAYER_COLUMNS` + run_id, eps, norm). Both are
    empty when nothing was compressed yet.
    """
    summaries, layers = [], []
    stores = [RunStore.at(d) for d in run_dirs(path)]
    for run in stores:
        for file in sorted(run.compress_dir.glob("eps_*.parquet")):
            (layers if file.name.endswith(".layers.parquet") else summaries).append(pd.read_parquet(file))
    if not summaries:
        return pd.DataFrame(columns=SUMMARY_COLUMNS), pd.DataFrame(columns=[*LAYER_COLUMNS, "run_id", "eps", "norm"])
    summary = pd.concat(summaries, ignore_index=True).sort_values(["run_id", "norm", "eps"], ignore_index=True)
    return _with_settings(summary, stores), pd.concat(layers, ignore_index=True)


def smallest(table: pd.DataFrame, max_drop: float = 0.01) -> pd.DataFrame:
    """Per run, the most compressed ε whose test accuracy is within ``max_drop`` of the uncompressed
    network's (the smallest network at equal accuracy); sorted by its parameter count.

    Runs without an accuracy (regression) use the test loss instead: at most ``1 + max_drop``
    times the uncompressed one.
    """
    by_accuracy = table["test_acc_after"] >= table["test_acc_before"] - max_drop
    by_loss = table["test_loss_after"] <= table["test_loss_before"] * (1 + max_drop)
    ok = table[by_accuracy.where(table["test_acc_before"].notna(), by_loss)]
    best = ok.sort_values(["params_after", "eps"]).groupby("run_id", sort=False).head(1)
    return best.sort_values("params_after", ignore_index=True)


# -- tables for people ----------------------------------------------------------------------------
SIZES = ["params_before", "params_after", "flops_before", "flops_after"]
ACCURACIES = ["test_acc_before", "test_acc_after", "train_acc_before", "train_acc_after"]


def layer_table(path: str | Path, row: pd.Series) -> pd.DataFrame:
    """What happened to each layer of one compressed run at one ε (a row of :func:`compress_run`)."""
    layers = read_compressed(path)[1]
    same = (layers["run_id"] == row["run_id"]) & (layers["eps"] == row["eps"]) & (layers["norm"] == row["norm"])
    layers = layers[same]
    columns = ["name", "kind", "shape", "rank", "params_before", "params_after", "flops_before", "flops_after"]
    return layers[[*columns, "compressed", "reason"]]


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`compress_run` table for reading: run, settings, ε, sizes and accuracies, sorted."""
    settings = [c for c in table.columns if "." in c]
    return table.sort_values([*settings, "run_id", "eps"])[["run_id", *settings, "eps", *SIZES, *ACCURACIES]]


def smallest_table(table: pd.DataFrame, max_drop: float = 0.01) -> pd.DataFrame:
    """:func:`smallest` for reading: run, settings, ε, parameters and test accuracies."""
    settings = [c for c in table.columns if "." in c]
    return smallest(table, max_drop)[["run_id", *settings, "eps", "params_before", "params_after", *ACCURACIES[:2]]]


def figure_path(path: str | Path) -> Path:
    """Where ``rankbias compress PATH`` writes its figure by default."""
    return RunStore.at(path).compress_dir / "compress.png" if is_run(path) else Path(path) / "compress.png"
