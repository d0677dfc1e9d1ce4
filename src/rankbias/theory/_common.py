"""What every check shares: the table's columns, the run's settings, Eckart–Young distances.

Every check returns one row per (run, matrix, epoch, parameter) with the columns of
:data:`COLUMNS`: ``check`` (which claim, e.g. ``gsgp_lemma_3_2``), ``run_id``, ``layer`` (the
matrix's name, as in the records), ``epoch``, ``param`` (the check's free parameter, printed:
``n=3``, ``eps=0.01``, ``B*=8``), ``measured``, ``bound``, ``holds`` (nullable boolean: NA where the
claim makes no prediction or its premise is not met), ``trivial`` (the bound says nothing: see
``note``) and ``note`` (why it fails, why it is trivial, what it assumes). A check may add its
own numeric columns after these (``n``, ``eps``, ``norms`` ...).

The papers' λ is ``weight_decay / 2`` (:func:`rankbias.conventions.theory_lambda`); the factor
``2μλ`` of their bounds is therefore ``μ · weight_decay``, computed by :func:`decay_factor`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import ScheduleConfig
from ..conventions import theory_lambda
from ..errors import RecordsError

COLUMNS = ["check", "run_id", "layer", "epoch", "param", "measured", "bound", "holds", "trivial", "note"]


def table(rows: list[dict]) -> pd.DataFrame:
    """Rows → a DataFrame with :data:`COLUMNS` first (``holds`` as pandas' nullable boolean)."""
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = pd.NA
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[COLUMNS + extra]
    frame["holds"] = frame["holds"].astype("boolean")
    frame["trivial"] = frame["trivial"].fillna(False).astype(bool)
    frame["note"] = frame["note"].fillna("")
    return frame


def decay_factor(lr: float, weight_decay: float) -> float:
    """The papers' ``2μλ`` (GSGP Lemma 3.2, Thm 3.3) with λ = ``theory_lambda(weight_decay)``."""
    return 2 * lr * theory_lambda(weight_decay)


def tail_distance(sv, rank: int) -> float:
    """Eckart–Young: ``min_{rank(V) ≤ rank} ‖W/‖W‖_F − V‖_F = sqrt(Σ_{i>rank} σ_i²) / ‖W‖_F``.

    ``sv``: all singular values of W (any order). 0 for the zero matrix.
    """
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    total = float((sv * sv).sum())
    if total == 0:
        return 0.0
    return float(np.sqrt((sv[int(rank) :] ** 2).sum() / total))


def approximate_rank(sv, eps: float) -> int:
    """The smallest r with ``tail_distance(sv, r) ≤ eps``: the rank GSGP Thm 3.3 bounds."""
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    total = float((sv * sv).sum())
    if total == 0:
        return 0
    # tails[r] = Σ_{i≥r} σ_i² for r = 0 .. k
    tails = np.concatenate([np.cumsum((sv * sv)[::-1])[::-1], [0.0]])
    return int(np.argmax(tails <= eps * eps * total))


def run_row(results, run_id: str) -> pd.Series:
    """The run's row of ``results.runs`` (its flattened config)."""
    rows = results.runs[results.runs["run_id"] == run_id]
    if rows.empty:
        raise RecordsError(f"run {run_id} is not in these results")
    return rows.iloc[0]


def schedule(run: pd.Series) -> ScheduleConfig:
    """The run's learning-rate schedule, rebuilt from its flattened config (constant for a run
    recorded by ``rb.Tracker`` that did not give ``schedule.kind``)."""
    if not isinstance(run["schedule.kind"], str):
        return ScheduleConfig()
    milestones = run["schedule.milestones"]
    return ScheduleConfig(
        kind=run["schedule.kind"],
        milestones=tuple(int(m) for m in (milestones if milestones is not None else ())),
        factor=float(run["schedule.factor"]),
        every=int(run["schedule.every"]),
    )


def last_epoch(frame: pd.DataFrame, run_id: str) -> int:
    epochs = frame.loc[frame["run_id"] == run_id, "epoch"]
    if epochs.empty:
        raise RecordsError(f"run {run_id} has no records")
    return int(epochs.max())
