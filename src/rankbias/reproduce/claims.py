"""A figure's claim checked on its runs: a verdict that is a statistical statement.

Every check returns a :class:`Verdict`: one of :data:`VERDICTS`, one sentence saying why, the
table behind it (``claim.csv``) and its statistics (``claim.json``). The tests are written down
in docs/reproduce.md ("The tests"); in short:

- **trend** (B, μ, λ; CHEN's stable rank against λ): the blocked Kendall-τ permutation test of
  :func:`rankbias.theory.trend.trend_test`, with the effect's bootstrap interval over seeds. A B
  or μ trend is compared with the same trend in its λ = 0 twins (the weight-decay control).
- **bottleneck**, **balanced** (GP Figs. 6–7): the final layer pattern against the same runs'
  pattern at initialization; a pattern training did not make is ``uninformative``.
- **theorem_3_3** (GSGP Fig. 18): measured ε-rank ≤ bound on the rows where the bound is below
  the matrix's smaller dimension; none → ``uninformative``.
- **norm_ratio** (GSGP Figs. 14–15): every counted matrix's norm drift within tolerance
  (:func:`rankbias.theory.drift.norm_drift`).
- **sgd_noise** (GP Fig. 1): each λ > 0 run collapses or keeps d(W_{t+1}, W_t) above its λ = 0
  twin's; a one-sided sign test over the runs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .. import theory
from ..store.records import learned, subset, varied_keys
from ..theory.drift import TOLERANCE as DRIFT_TOLERANCE
from ..theory.drift import norm_drift
from ..theory.prediction import (
    ALPHA,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    KNOBS,
    NOT_APPLICABLE,
    NOT_ENOUGH,
    REPLICATE_KEYS,
    SEED,
    UNINFORMATIVE,
    VERDICTS,
    WITHOUT_WD,
    final_values,
    trend_verdict,
)
from ..theory.trend import bootstrap_mean, sign_flip_p
from .catalog import WD, Claim

__all__ = [
    "ALPHA",
    "CHECKS",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NOT_APPLICABLE",
    "NOT_ENOUGH",
    "REPLICATE_KEYS",
    "UNINFORMATIVE",
    "VERDICTS",
    "WITHOUT_WD",
    "Verdict",
    "check",
    "learned",
]


class Verdict(NamedTuple):
    verdict: str  # one of VERDICTS
    why: str  # one sentence
    table: pd.DataFrame  # claim.csv: one row per block (trend), run or matrix
    tests: list  # one dict per test: statistic, p, effect, ci, control ...
    convergence: pd.DataFrame  # one row per run: drift, converged (theory.drift.norm_drift)


def check(claim: Claim, results, *, rng: int = 0) -> Verdict:
    """Evaluate ``claim`` on loaded ``results`` (``rb.load``): finished runs only."""
    done = results.runs[results.runs["state"] == "done"]["run_id"]
    results = subset(results, set(done))
    convergence = norm_drift(results) if len(done) else pd.DataFrame(columns=["run_id", "drift", "converged"])
    if not len(done):
        return Verdict(NOT_ENOUGH, "no run finished", pd.DataFrame(), [], convergence)
    verdict, why, table, tests = CHECKS[claim.check](claim, results, convergence, rng)
    return Verdict(verdict, why, table.reset_index(drop=True), tests, convergence)


# -- trends -----------------------------------------------------------------------------------
def _trend(claim: Claim, results, convergence: pd.DataFrame, rng: int):
    """Each knob of the claim (``knob=None``: every one that varies) tested on its own; the
    verdict is the weakest of theirs (fails > inconclusive > holds without weight decay > holds)."""
    measure = "stable_rank" if claim.check == "stable_rank" else "avg_rank"
    runs = final_values(subset(results, learned(results)), measure)
    knobs = [claim.knob] if claim.knob else [k for k in KNOBS if k in varied_keys(runs)]
    parts = [trend_verdict(runs, knob, convergence, claim.min_effect, rng) for knob in knobs if knob in runs]
    if not parts:
        return NOT_ENOUGH, "the claim's knob does not vary among the finished runs", pd.DataFrame(), []
    order = [FAILS, INCONCLUSIVE, NOT_ENOUGH, NOT_APPLICABLE, WITHOUT_WD, HOLDS]
    worst = min(parts, key=lambda part: order.index(part[0]))
    why = worst[1] if len(parts) == 1 else "; ".join(f"{p[3][0]['knob']}: {p[0]} ({p[1]})" for p in parts if p[3])
    return (
        worst[0],
        why or worst[1],
        pd.concat([p[2] for p in parts], ignore_index=True),
        [t for p in parts for t in p[3]],
    )



# -- layer shapes (GP Figs. 6-7) ----------------------------------------------------------------
def _layer_ranks(results) -> pd.DataFrame:
    """One row per run with λ > 0 that learned (:func:`learned`): its counted matrices' ε-ranks at
    the first and last record (lists, in layer order), the full scale (mean smaller dimension)
    and its seed."""
    layers = results.layers[results.layers["counted"] & results.layers["run_id"].isin(learned(results))]
    layers = layers.sort_values(["run_id", "epoch", "index"])
    rows = []
    for run_id, group in layers.groupby("run_id"):
        run = results.runs.set_index("run_id").loc[run_id]
        first, last = group[group["epoch"] == group["epoch"].min()], group[group["epoch"] == group["epoch"].max()]
        if float(run[WD]) == 0 or first["epoch"].iloc[0] == last["epoch"].iloc[0]:
            continue
        rows.append(
            {
                "run_id": run_id,
                "seed": run[SEED],
                "initial": first["eps_rank"].tolist(),
                "final": last["eps_rank"].tolist(),
                "full": float(np.minimum(last["rows"], last["cols"]).mean()),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "seed", "initial", "final", "full"])


def _per_seed_effect(frame: pd.DataFrame, column: str, rng: int) -> tuple[float, tuple[float, float], list]:
    per_seed = frame.groupby("seed")[column].mean()
    return float(per_seed.mean()), bootstrap_mean(per_seed.to_numpy(), rng), [int(s) for s in per_seed.index]


def _bottleneck(claim: Claim, results, convergence, rng):
    """GP Fig. 6: the middle layers' rank falls below the first's and last's, and training made it
    so. Per run (λ > 0): margin = mean(first, last) − mean(middle) in % of the full rank (means:
    under exchangeable noise its expectation is 0), at initialization and at the end;
    Δ = final − initial margin, tested > 0 by sign flips."""
    table = _layer_ranks(results)
    table = table[table["initial"].map(len) >= 3]
    if table.empty:
        return NOT_ENOUGH, "no run with λ > 0 and three or more counted matrices", table, []

    def margin(ranks, full):
        return 100 * ((ranks[0] + ranks[-1]) / 2 - np.mean(ranks[1:-1])) / full

    table = table.assign(initial_margin=[margin(r, f) for r, f in zip(table["initial"], table["full"])],
                         final_margin=[margin(r, f) for r, f in zip(table["final"], table["full"])])  # fmt: skip
    table["delta"] = table["final_margin"] - table["initial_margin"]
    table["agrees"] = table["final_margin"] > 0
    p, p_opposite = sign_flip_p(table["delta"].to_numpy(), rng)
    effect, ci, seeds = _per_seed_effect(table, "delta", rng)
    tests = [
        {
            "test": "bottleneck made by training",
            "statistic": float(table["delta"].mean()),
            "p": p,
            "p_opposite": p_opposite,
            "effect": effect,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "seeds": seeds,
        }
    ]
    numbers = f"Δ margin {effect:.1f} % of the full rank [{ci[0]:.1f}, {ci[1]:.1f}], p = {p:.3g}"
    present = table["agrees"].mean() > 0.5
    if p <= ALPHA and ci[0] > claim.min_effect and present:
        return HOLDS, f"training made a bottleneck in most runs: {numbers}", table, tests
    if (table["initial_margin"] > claim.min_effect).mean() > 0.5:
        return (
            UNINFORMATIVE,
            f"the bottleneck is already there at initialization and training did not deepen it ({numbers})",
            table,
            tests,
        )
    if p_opposite <= ALPHA or ci[1] < claim.min_effect:
        return FAILS, f"training did not make a bottleneck: {numbers}", table, tests
    return INCONCLUSIVE, f"{numbers}; {table['agrees'].mean():.0%} of runs end with one", table, tests


def _balanced(claim: Claim, results, convergence, rng):
    """GP Fig. 7: training lowered the residual blocks' ranks (else the balance is that of
    initialization: ``uninformative``) and they stay within ``tolerance`` of each other (the
    spread (max − min)/max of all counted matrices but the input layer, mean over seeds)."""
    table = _layer_ranks(results)
    table = table[table["initial"].map(len) >= 3]
    if table.empty:
        return NOT_ENOUGH, "no run with λ > 0 and three or more counted matrices", table, []
    table = table.assign(
        drop=[
            100 * (np.mean(i[1:]) - np.mean(f[1:])) / full
            for i, f, full in zip(table["initial"], table["final"], table["full"])
        ],
        spread=[(max(f[1:]) - min(f[1:])) / max(max(f[1:]), 1) for f in table["final"]],
    )
    table["agrees"] = table["spread"] <= claim.tolerance
    p, _ = sign_flip_p(table["drop"].to_numpy(), rng)
    drop, drop_ci, seeds = _per_seed_effect(table, "drop", rng)
    spread, spread_ci, _ = _per_seed_effect(table, "spread", rng)
    tests = [
        {
            "test": "blocks' rank fell",
            "statistic": float(table["drop"].mean()),
            "p": p,
            "effect": drop,
            "ci_low": drop_ci[0],
            "ci_high": drop_ci[1],
            "seeds": seeds,
        },
        {
            "test": f"spread ≤ {claim.tolerance:g}",
            "effect": spread,
            "ci_low": spread_ci[0],
            "ci_high": spread_ci[1],
            "seeds": seeds,
        },
    ]
    fell = f"the blocks' rank fell {drop:.1f} % of the full rank [{drop_ci[0]:.1f}, {drop_ci[1]:.1f}], p = {p:.3g}"
    if not (p <= ALPHA and drop_ci[0] > claim.min_effect):
        return UNINFORMATIVE, f"training did not lower the ranks enough to test their balance: {fell}", table, tests
    spread_text = f"spread {spread:.2f} [{spread_ci[0]:.2f}, {spread_ci[1]:.2f}] against {claim.tolerance:g}"
    if spread_ci[1] <= claim.tolerance:
        return HOLDS, f"{fell}; {spread_text}", table, tests
    if spread_ci[0] > claim.tolerance:
        return FAILS, f"the blocks are not balanced: {spread_text} ({fell})", table, tests
    return INCONCLUSIVE, f"{spread_text}: the interval straddles the tolerance ({fell})", table, tests


# -- bounds and properties ----------------------------------------------------------------------
def _theorem(claim: Claim, results, convergence, rng):
    """GSGP Thm 3.3 over ε (Fig. 18) on the counted matrices: the theorem's quantity, the smallest
    rank within Frobenius distance ε of W/‖W‖_F (``approx_rank``), is at most the bound, on the
    rows where the bound says something (below the smaller dimension), for runs that reached the
    norm equilibrium the theorem assumes (‖W_{T−1}‖/‖W_T‖ → 1)."""
    table = theory.theorem_3_3(results)
    table = table[table["counted"]].copy()
    table["agrees"] = (table["approx_rank"] <= table["bound"]).where(~table["trivial"])
    informative = table[~table["trivial"]]
    tests = [{"test": "bound", "rows": len(table), "informative_rows": len(informative),
              "holding": int(informative["agrees"].astype(bool).sum())}]  # fmt: skip
    if table.empty:
        return NOT_ENOUGH, "no counted matrix", table, tests
    if informative.empty:
        smallest = float(table["bound"].min())
        why = (
            f"every bound is at least the matrix's smaller dimension (smallest bound {smallest:.3g}): "
            "the theorem says nothing here"
        )
        return UNINFORMATIVE, why, table, tests
    stopped = convergence[convergence["run_id"].isin(informative["run_id"]) & convergence["converged"].eq(False)]
    if len(stopped):
        why = (
            f"not converged: {len(stopped)} of {informative['run_id'].nunique()} runs have not reached the norm "
            "equilibrium the theorem assumes"
        )
        return INCONCLUSIVE, why, table, tests
    failed = informative[~informative["agrees"].astype(bool)]
    if len(failed):
        return FAILS, f"{len(failed)} of {len(informative)} informative rows exceed the bound", table, tests
    return HOLDS, f"all {len(informative)} informative rows (of {len(table)}) are below the bound", table, tests


def _norm_ratio(claim: Claim, results, convergence, rng):
    """GSGP Figs. 14–15: every counted matrix of every run with λ > 0 at its norm equilibrium
    (|drift| ≤ tolerance, :func:`rankbias.theory.drift.norm_drift`) in at least ``min_share``."""
    table = norm_drift(results, layer_level=True)
    table = table[table["converged"].notna()].copy()
    if table.empty:
        return NOT_APPLICABLE, "no run with weight decay and two records: there is no equilibrium to check", table, []
    table["agrees"] = table["converged"].astype(bool)
    share = float(table["agrees"].mean())
    tests = [
        {"test": "norm equilibrium", "share": share, "median_drift": float(table["drift"].median()), "rows": len(table)}
    ]
    text = (
        f"{share:.0%} of {len(table)} matrices within ±{DRIFT_TOLERANCE:g} of the equilibrium "
        f"(median drift {table['drift'].median():+.2f})"
    )
    return (HOLDS if share >= claim.min_share else FAILS), text, table, tests


def _sgd_noise(claim: Claim, results, convergence, rng):
    """GP Props 1–2: every λ > 0 run collapses or keeps d(W_{t+1}, W_t) above its λ = 0 twin's;
    a one-sided sign test (``scipy.stats.binomtest``) over the runs says whether there are enough."""
    table = theory.sgd_noise(results)
    table = table[table["holds"].notna()].copy()
    if table.empty:
        return NOT_ENOUGH, "no run with weight decay and a distance to compare", table, []
    table["agrees"] = table["holds"].astype(bool)
    agree, total = int(table["agrees"].sum()), len(table)
    p = float(stats.binomtest(agree, total, 0.5, alternative="greater").pvalue)
    tests = [{"test": "sign test", "agree": agree, "runs": total, "p": p}]
    text = f"{agree} of {total} runs with λ > 0 collapse or keep d(W_t+1, W_t) up (sign test p = {p:.3g})"
    if agree < math.ceil(claim.min_share * total):
        return FAILS, text, table, tests
    return (HOLDS, text, table, tests) if p <= ALPHA else (INCONCLUSIVE, f"too few runs: {text}", table, tests)


CHECKS = {"trend": _trend, "stable_rank": _trend, "theorem_3_3": _theorem, "norm_ratio": _norm_ratio,
          "sgd_noise": _sgd_noise, "bottleneck": _bottleneck, "balanced": _balanced}  # fmt: skip
