"""Tables for people: a run's epoch table and a sweep's final-epoch summary."""

from __future__ import annotations

import pandas as pd

from .api import Results

EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "avg_rank"]


def epoch_table(results: Results, run_id: str | None = None) -> pd.DataFrame:
    """One run's records: epoch, lr, losses, accuracies, average rank, then each matrix's ε-rank."""
    run_id = run_id or results.runs["run_id"].iloc[0]
    scalars = results.scalars[results.scalars["run_id"] == run_id].set_index("epoch").sort_index()
    layers = results.layers[results.layers["run_id"] == run_id]
    ranks = layers.pivot(index="epoch", columns="layer", values="eps_rank")
    ranks = ranks[layers.sort_values("index")["layer"].unique()]
    return scalars[EPOCH_COLUMNS[1:]].join(ranks).reset_index()


def varied_keys(runs: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between the runs (the axes of a sweep)."""
    config_keys = [c for c in runs.columns if "." in c or c == "loss"]
    return [k for k in config_keys if runs[k].astype(str).nunique() > 1]


def final_summary(results: Results, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run: the varied settings, how it ended, and its last record."""
    runs = results.runs if run_ids is None else results.runs[results.runs["run_id"].isin(run_ids)]
    keys = varied_keys(runs) or ["model.name", "train.batch_size", "optimizer.lr", "optimizer.weight_decay"]
    columns = ["run_id", "epoch", "train_acc", "test_acc", "avg_rank"]
    scalars = results.scalars if not results.scalars.empty else pd.DataFrame(columns=columns)  # no run has a record yet
    last = scalars.sort_values("epoch").groupby("run_id").tail(1)
    table = runs[["run_id", *keys, "state"]].merge(last[columns], on="run_id", how="left")
    return table.sort_values(keys).reset_index(drop=True)
