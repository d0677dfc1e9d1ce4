"""Stored records as tables: read runs back (:func:`load`), recompute their ranks at any
threshold (:func:`rerank`), pick runs (:func:`subset`), and the tables people read (a run's
epoch table, a sweep's final-epoch summary, the keys that vary between runs).

``rb.load``, the CLI, the figures, the report and the checks all read records through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..spectra.measures import NORMS, eps_rank
from .catalog import read_tables, runs_table, scan_runs

DEFAULT_RESULTS = Path("results")


@dataclass
class Results:
    """The records of one or more runs as pandas DataFrames.

    ``runs``: one row per run (run_id, state, and the flattened config: ``optimizer.lr`` ...).
    ``scalars``: one row per run and recorded epoch. ``layers``: per run, epoch and weight matrix.
    ``spectra``: the singular values (``sv``, a float32 array) per run, epoch and matrix.
    ``step_norms``: with ``record.step_norms``, ‖W‖_F after each of the last steps of each
    recorded epoch (run_id, epoch, step, layer, fro_norm); empty otherwise. ``metrics``: for
    runs recorded by ``rb.Tracker``, any other scalar the user logged (run_id, epoch, name, value).
    """

    runs: pd.DataFrame
    scalars: pd.DataFrame
    layers: pd.DataFrame
    spectra: pd.DataFrame
    step_norms: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    metrics: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    damaged: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=["run_id", "problem"]))


def load(
    path: str | Path = DEFAULT_RESULTS,
    *,
    eps: float | None = None,
    norm: str | None = None,
    runs: Iterable[str] | None = None,
) -> Results:
    """Read a run directory or a results directory of many runs (``runs``: only these run ids).

    With ``eps`` or ``norm``, the ranks (``layers.eps_rank`` and ``scalars.avg_rank``) are
    recomputed from the stored singular values at that threshold, without retraining.

    A damaged run (an unreadable or missing file, a missing epoch, records of another schema
    version: ``store/integrity.py``) is left out and named in ``damaged`` (run_id, problem) and
    in a :class:`~rankbias.errors.DamagedRunWarning`; when no run is healthy, its
    :class:`~rankbias.errors.DamagedError` (or ``SchemaError``) is raised.
    """
    found = scan_runs(path)
    dirs = found.healthy
    if runs is not None:
        wanted = set(runs)
        dirs = [d for d in dirs if d.name in wanted]
    tables = read_tables(dirs)
    frames = {name: table.to_pandas() if table is not None else pd.DataFrame() for name, table in tables.items()}
    problems = found.damaged.items()
    damaged = pd.DataFrame({"run_id": [d.name for d, _ in problems], "problem": [str(e) for _, e in problems]})
    tables = [frames[name] for name in ("scalars", "layers", "spectra", "step_norms", "metrics")]
    results = Results(runs_table(dirs), *tables, damaged=damaged)
    if eps is not None or norm is not None:
        results = rerank(results, eps, norm)
    return results


def as_results(results: Results | str | Path, eps: float | None = None, norm: str | None = None) -> Results:
    """``results`` as :class:`Results`, with ranks at ``eps``/``norm`` (recomputed by :func:`rerank`), or the
    records read from a path."""
    if isinstance(results, Results):
        return rerank(results, eps, norm) if eps is not None or norm is not None else results
    return load(results, eps=eps, norm=norm)


def rerank(results: Results, eps: float | None = None, norm: str | None = None) -> Results:
    """Recompute ε-ranks and average ranks from the stored spectra at a new ``eps``/``norm``.

    Vectorized: the spectra of one length and one normalization are stacked into one array and
    thresholded at once (``spectra.measures.eps_rank``, each row at its run's ε, in the same
    precision as a row-by-row computation), so the ranks equal it exactly.
    """
    if norm is not None and norm not in NORMS:
        raise ConfigError("norm", f"must be one of {NORMS}, got {norm!r}")
    if eps is not None and not 0 < eps < 1:
        raise ConfigError("eps", f"must be in (0, 1), got {eps!r}")
    runs = results.runs.set_index("run_id")
    layers = results.layers.copy()
    keys = ["run_id", "epoch", "layer"]
    sv = layers[keys].merge(results.spectra[[*keys, "sv"]], on=keys, how="left")["sv"]
    # the recorded computation's precision: a Python float ε is cast to the spectra's float32,
    # a stored ε (float64 in the runs table) promotes the threshold to float64
    weak = type(eps) is float or type(eps) is int
    if eps is not None:
        run_eps = np.full(len(layers), eps, dtype=np.float32 if weak else np.float64)
    else:
        run_eps = runs["record.eps"].reindex(layers["run_id"]).to_numpy(np.float64)
    if norm is not None:
        run_norm = np.full(len(layers), norm, dtype=object)
    else:
        run_norm = runs["record.norm"].reindex(layers["run_id"]).to_numpy(object)
    lengths = sv.map(len).to_numpy()
    ranks = np.zeros(len(layers), dtype=np.int64)
    for length in np.unique(lengths):
        for kind in NORMS:
            rows = np.flatnonzero((lengths == length) & (run_norm == kind))
            if len(rows):
                stack = np.stack(sv.iloc[rows].to_list()).astype(np.float32, copy=False)
                ranks[rows] = eps_rank(stack, run_eps[rows][:, None], kind)
    layers["eps_rank"] = ranks
    average = layers[layers["counted"]].groupby(["run_id", "epoch"])["eps_rank"].mean().rename("avg_rank")
    scalars = results.scalars.drop(columns="avg_rank").merge(average.reset_index(), on=["run_id", "epoch"], how="left")
    return dataclasses.replace(results, scalars=scalars, layers=layers)


def subset(results: Results, run_ids) -> Results:
    """The records of ``run_ids`` only (every table of ``Results``)."""
    ids = set(run_ids)

    def pick(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["run_id"].isin(ids)] if "run_id" in table.columns else table

    return dataclasses.replace(results, **{f.name: pick(getattr(results, f.name)) for f in dataclasses.fields(results)})


# -- tables for people ---------------------------------------------------------------------------
EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "avg_rank"]


MAX_LAYER_COLUMNS = 12  # more matrices than this: epoch_table sums their ranks up (a ViT has 45)
UNCOUNTED_MARK = "*"  # after a matrix's name: its rank is not in avg_rank (docs/models.md)


def epoch_table(results: Results, run_id: str | None = None, layers: bool | None = None) -> pd.DataFrame:
    """One run's records: epoch, lr, losses, accuracies, average rank, then the matrices' ε-ranks.

    ``layers``: one column per matrix (``True``), or the min / median / max rank over the
    matrices that count in ``avg_rank`` (``False``); ``None``: per matrix for at most
    ``MAX_LAYER_COLUMNS`` matrices. A matrix left out of ``avg_rank`` (the classifier ``out`` ...)
    has ``*`` after its name."""
    run_id = run_id or results.runs["run_id"].iloc[0]
    scalars = results.scalars[results.scalars["run_id"] == run_id].set_index("epoch").sort_index()
    rows = results.layers[results.layers["run_id"] == run_id]
    names = rows.sort_values("index")["layer"].unique()
    if layers is None:
        layers = len(names) <= MAX_LAYER_COLUMNS
    if layers:
        ranks = rows.pivot(index="epoch", columns="layer", values="eps_rank")[names]
        counted = rows.groupby("layer")["counted"].first()
        ranks.columns = [n if counted[n] else n + UNCOUNTED_MARK for n in names]
    else:
        ranks = rows[rows["counted"]].groupby("epoch")["eps_rank"].agg(["min", "median", "max"])
        ranks.columns = [f"{c}_rank" for c in ranks.columns]
    return scalars[EPOCH_COLUMNS[1:]].join(ranks).reset_index()


def epoch_table_note(table: pd.DataFrame) -> str:
    """What the rank columns of :func:`epoch_table`'s ``table`` are, in one line ("" if plain)."""
    if "median_rank" in table:
        return "min/median/max_rank: over the weight matrices in avg_rank (a column per matrix: --layers)"
    if any(str(c).endswith(UNCOUNTED_MARK) for c in table.columns):
        return f"{UNCOUNTED_MARK}: not in avg_rank (docs/models.md says which matrices count)"
    return ""


def config_keys(runs: pd.DataFrame) -> list[str]:
    """The columns of a runs table that are config keys (``optimizer.lr``, ``loss`` ...)."""
    return [c for c in runs.columns if "." in c or c == "loss"]


def learned(results: Results) -> set[str]:
    """The runs whose last train accuracy is above twice their accuracy at initialization (about
    chance); a regression run (``loss: mse_scalar``: its "accuracy" means nothing) when its last
    train loss is below its first. A run that ends at chance collapsed or is caught in an unstable
    phase: its low rank is no evidence of the bias, so the trend and layer checks leave it out
    (``claim.json`` lists it under ``not_learned``)."""
    scalars = results.scalars.sort_values("epoch").groupby("run_id")
    accuracy, loss = scalars["train_acc"], scalars["train_loss"]
    regression = (
        results.runs.set_index("run_id")["loss"].eq("mse_scalar").reindex(accuracy.first().index, fill_value=False)
    )
    keep = (accuracy.last() > 2 * accuracy.first()) | accuracy.last().isna()
    keep = keep.where(~regression, loss.last() < loss.first())
    return set(keep[keep].index)


def varied_keys(runs: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between the runs (the axes of a sweep). ``runs``: a runs
    table (``Results.runs``) or any frame with one row per run and config keys as columns."""
    return [k for k in config_keys(runs) if runs[k].astype(str).nunique() > 1]


def final_summary(results: Results, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run: the varied settings, how it ended, and its last record."""
    runs = results.runs if run_ids is None else results.runs[results.runs["run_id"].isin(run_ids)]
    keys = varied_keys(runs) or ["model.name", "train.batch_size", "optimizer.lr", "optimizer.weight_decay"]
    columns = ["run_id", "epoch", "train_acc", "test_acc", "avg_rank"]
    scalars = results.scalars if not results.scalars.empty else pd.DataFrame(columns=columns)  # no run has a record yet
    last = scalars.sort_values("epoch").groupby("run_id").tail(1)
    table = runs[["run_id", *keys, "state"]].merge(last[columns], on="run_id", how="left")
    return table.sort_values(keys).reset_index(drop=True)
