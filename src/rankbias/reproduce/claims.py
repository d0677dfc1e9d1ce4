"""A figure's claim checked on its runs: a table and a verdict (holds / fails / not enough runs).

Monotone trends use GSGP Prediction 4.1 (:func:`rankbias.theory.prediction_4_1`), the norm
ratio and Theorem 3.3 use :func:`rankbias.theory.theorem_3_3`, SGD noise uses
:func:`rankbias.theory.sgd_noise`; GP's per-layer shapes (Figs. 6–7) and CHEN's stable rank
against λ read the stored ``layers`` table.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pandas as pd

from .. import theory
from ..plots.select import subset
from ..summary import varied_keys
from .catalog import WD, Claim

HOLDS, FAILS, NOT_ENOUGH = "holds", "fails", "not enough runs"


class Verdict(NamedTuple):
    verdict: str  # holds, fails, not enough runs
    share: float  # share of rows that agree (NaN: none)
    table: pd.DataFrame  # one row per compared pair / layer / run, with an ``agrees`` column


def check(claim: Claim, results) -> Verdict:
    """Evaluate ``claim`` on loaded ``results`` (``rb.load``)."""
    done = results.runs[results.runs["state"] == "done"]["run_id"]
    results = subset(results, set(done))
    table = CHECKS[claim.check](claim, results) if len(done) else pd.DataFrame({"agrees": []})
    table = table[table["agrees"].notna()] if len(table) else table
    if table.empty:
        return Verdict(NOT_ENOUGH, float("nan"), table)
    share = float(table["agrees"].astype(bool).mean())
    return Verdict(HOLDS if share >= claim.min_share and share > 0 else FAILS, share, table.reset_index(drop=True))


def _trend(claim: Claim, results) -> pd.DataFrame:
    """GSGP Prediction 4.1 on the pairs that differ in ``claim.knob`` (all knobs when None),
    among the runs that learned (:func:`learned`)."""
    table = theory.prediction_4_1(subset(results, learned(results))).table
    return table if claim.knob is None else table[table["knob"] == claim.knob]


def learned(results) -> set[str]:
    """The runs whose last train accuracy is above twice their accuracy at initialization (about
    chance), and runs without an accuracy (regression). A run that ends at chance collapsed or
    is caught in an unstable phase: its low rank is no evidence of the bias, so the trend check
    leaves it out (``claim.json`` lists it under ``not_learned``)."""
    scalars = results.scalars.sort_values("epoch")
    accuracy = scalars.groupby("run_id")["train_acc"]
    first, last = accuracy.first(), accuracy.last()
    keep = (last > 2 * first) | last.isna()
    return set(keep[keep].index)


def _theorem(claim: Claim, results) -> pd.DataFrame:
    """GSGP Thm 3.3 over ε (Fig. 18) on the counted matrices: measured ε-rank ≤ bound."""
    table = theory.theorem_3_3(results)
    table = table[table["counted"]].copy()
    table["agrees"] = table["holds"]
    return table


def _norm_ratio(claim: Claim, results) -> pd.DataFrame:
    """‖W_{T−1}‖/‖W_T‖ at the last record within ``tolerance`` of 1 (GSGP Figs. 14–15)."""
    table = theory.theorem_3_3(results, eps=[results.runs["record.eps"].iloc[0]])
    table = table[table["counted"]][["run_id", "layer", "epoch", "norm_ratio", "ratio_over"]].copy()
    table["agrees"] = (table["norm_ratio"] - 1).abs() <= claim.tolerance
    return table


def _sgd_noise(claim: Claim, results) -> pd.DataFrame:
    """GP Props 1–2: with λ > 0, the weights collapse or d(W_{t+1}, W_t) stays away from 0."""
    table = theory.sgd_noise(results)
    table["agrees"] = table["holds"].astype("boolean")
    return table


def _final_layers(results) -> pd.DataFrame:
    layers = results.layers[results.layers["counted"]]
    last = layers.groupby("run_id")["epoch"].transform("max")
    return layers[layers["epoch"] == last].sort_values(["run_id", "index"])


def _bottleneck(claim: Claim, results) -> pd.DataFrame:
    """GP Fig. 6: per run with λ > 0, the lowest rank of the middle layers < the first's and the last's."""
    rows = []
    for run_id, group in _final_layers(results).groupby("run_id"):
        ranks = group["eps_rank"].tolist()
        if len(ranks) < 3 or _wd(results, run_id) == 0:
            continue
        rows.append({"run_id": run_id, "ranks": ranks, "middle_min": min(ranks[1:-1]), "first": ranks[0], "last": ranks[-1],
                     "agrees": min(ranks[1:-1]) < min(ranks[0], ranks[-1])})
    return pd.DataFrame(rows, columns=["run_id", "ranks", "middle_min", "first", "last", "agrees"])


def _balanced(claim: Claim, results) -> pd.DataFrame:
    """GP Fig. 7: the residual blocks' matrices (all counted but the input layer) have ranks
    within ``tolerance`` × the largest of each other."""
    rows = []
    for run_id, group in _final_layers(results).groupby("run_id"):
        ranks = group["eps_rank"].tolist()[1:]
        if len(ranks) < 2:
            continue
        spread = (max(ranks) - min(ranks)) / max(max(ranks), 1)
        rows.append({"run_id": run_id, "ranks": ranks, "spread": spread, "agrees": spread <= claim.tolerance})
    return pd.DataFrame(rows, columns=["run_id", "ranks", "spread", "agrees"])


def _stable_rank(claim: Claim, results) -> pd.DataFrame:
    """CHEN Sec. 5: the stable rank ‖V‖_F²/‖V‖₂² of the first counted matrix falls as λ grows
    (every pair of runs that differ in λ only, all other keys equal)."""
    first = _final_layers(results).groupby("run_id").head(1).set_index("run_id")["stable_rank"]
    runs = results.runs.set_index("run_id")
    others = [k for k in varied_keys(results.runs) if k != WD]
    rows = []
    for _, group in results.runs.groupby([results.runs[k].astype(str) for k in others]) if others else [((), results.runs)]:
        ordered = group.sort_values(WD)["run_id"].tolist()
        for low, high in itertools.pairwise(ordered):
            rows.append({"run_id": high, "other_run_id": low, "value": runs.at[high, WD], "other_value": runs.at[low, WD],
                         "stable_rank": first[high], "other_stable_rank": first[low], "agrees": first[high] < first[low]})
    return pd.DataFrame(rows, columns=["run_id", "other_run_id", "value", "other_value", "stable_rank", "other_stable_rank", "agrees"])


def _wd(results, run_id) -> float:
    return float(results.runs.set_index("run_id").at[run_id, WD])


CHECKS = {"trend": _trend, "theorem_3_3": _theorem, "norm_ratio": _norm_ratio, "sgd_noise": _sgd_noise,
          "bottleneck": _bottleneck, "balanced": _balanced, "stable_rank": _stable_rank}
