"""GSGP Prediction 4.1 (seed 003, Sec. 4) on a sweep: a trend test per knob, with its control.

"When training a neural network using SGD with weight decay, the effective rank of the learned
weight matrices tends to decrease as the batch size decreases, or as the weight decay or
learning rate increases" — and (Sec. 4, Fig. 3; GP Fig. 3) without weight decay the batch size
and learning rate barely matter.

Each knob that varies is tested with :func:`rankbias.theory.trend.trend_test` (blocked Kendall
τ, permutation p-value, bootstrap effect over seeds); a B or μ trend is compared with the same
trend among the runs without weight decay. The verdicts (:data:`VERDICTS`) and their rules are
those of ``rankbias reproduce`` (docs/reproduce.md, "The tests"): one trend test in the code base.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..conventions import REPLICATE_KEYS, symbol
from ..store.records import subset, varied_keys
from .drift import norm_drift
from .trend import TrendTest, bootstrap_mean, sign_flip_p, trend_test

# the knob, and the direction in which the prediction says the rank falls
KNOBS = {"train.batch_size": "smaller", "optimizer.lr": "larger", "optimizer.weight_decay": "larger"}
WD = "optimizer.weight_decay"
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
WITHOUT_WD, NOT_APPLICABLE = "holds without weight decay", "not applicable"
UNINFORMATIVE, NOT_ENOUGH = "uninformative", "not enough runs"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, WITHOUT_WD, NOT_APPLICABLE, UNINFORMATIVE, NOT_ENOUGH)
ALPHA = 0.05  # significance level of every test
MIN_EFFECT = 2.0  # % of the full rank the effect's whole interval must clear
SEED = "train.seed"


class Prediction(NamedTuple):
    """``tests``: one row per knob (verdict, why, statistic, p, effect, interval, control);
    ``blocks``: one row per block of runs (its τ and drop)."""

    tests: pd.DataFrame
    blocks: pd.DataFrame


def prediction_4_1(results, *, min_effect: float = MIN_EFFECT, rng: int = 0) -> Prediction:
    """GSGP Prediction 4.1 on the finished runs of ``results``: for each of B, μ, λ that varies,
    :func:`trend_verdict` on the final average rank (at the ε the records were loaded with),
    with the runs' convergence (:func:`~rankbias.theory.drift.norm_drift`)."""
    done = results.runs[results.runs["state"] == "done"]
    if len(done) < 2 or results.layers.empty:
        return Prediction(pd.DataFrame(columns=["knob", "symbol", "verdict", "why"]), pd.DataFrame())

    results = subset(results, set(done["run_id"]))
    runs, convergence = final_values(results), norm_drift(results)
    rows, blocks = [], []
    for knob in [k for k in KNOBS if k in varied_keys(runs)]:
        verdict, why, table, tests = trend_verdict(runs, knob, convergence, min_effect, rng)
        first_test = tests[0] if tests else {}
        rows.append({"knob": knob, "symbol": symbol(knob), "verdict": verdict, "why": why, **first_test})
        blocks.append(table)
    tests = pd.DataFrame(rows).drop(columns=["test"], errors="ignore")
    return Prediction(tests, pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame())


def final_values(results, measure: str = "avg_rank") -> pd.DataFrame:
    """One row per run: its flattened config, ``value`` (the final ``avg_rank``, or the final
    ``stable_rank`` of the first counted matrix: CHEN's V) and ``full`` (the value's full scale:
    the mean smaller dimension of the counted matrices, or V's)."""
    layers = results.layers[results.layers["counted"]]
    final_epoch = layers.groupby("run_id")["epoch"].transform("max")
    last = layers[layers["epoch"] == final_epoch].sort_values(["run_id", "index"])
    smaller = np.minimum(last["rows"], last["cols"])
    if measure == "avg_rank":
        value = results.scalars.sort_values("epoch").groupby("run_id")["avg_rank"].last()
        full = smaller.groupby(last["run_id"]).mean()
    else:
        first = last.groupby("run_id").head(1).set_index("run_id")
        value, full = first[measure], np.minimum(first["rows"], first["cols"])
    frame = results.runs.set_index("run_id").assign(value=value, full=full).reset_index()
    return frame.dropna(subset=["value"])


def _blocked(frame: pd.DataFrame, knob: str) -> pd.DataFrame:
    """Per run: ``block`` (the values of every varied key but the knob and the seed keys, and the
    seed), ``pair`` (the same without λ: a block's λ = 0 twin block has the same pair) and ``seed``."""
    keys = [k for k in varied_keys(frame) if k not in (knob, *REPLICATE_KEYS)]
    text = {k: frame[k].astype(str) for k in [*keys, SEED]}

    def label(columns):  # "0.1 · 5e-3 · seed 2"
        start = pd.Series("", index=frame.index)
        return functools.reduce(lambda a, b: a + b + " · ", [text[k] for k in columns], start) + "seed " + text[SEED]

    return frame.assign(block=label(keys), pair=label([k for k in keys if k != WD]), seed=frame[SEED])


def _test_dict(name: str, test: TrendTest) -> dict:
    return {"test": name, "knob": test.knob, "statistic": test.statistic, "p": test.p, "p_opposite": test.p_opposite,
            "exact": test.exact, "effect": test.effect, "ci_low": test.ci[0], "ci_high": test.ci[1],
            "seeds": [int(s) for s in test.seeds], "blocks": test.n_blocks}  # fmt: skip


def trend_verdict(runs: pd.DataFrame, knob: str, convergence: pd.DataFrame, min_effect: float, rng: int = 0):
    """(verdict, why, blocks table, tests) of one knob's trend on ``runs`` (:func:`final_values`).

    A B or μ trend is tested on the runs with λ > 0 and, as the control, on their λ = 0 twins;
    ``holds`` needs the λ > 0 effect to exceed the control's by more than ``min_effect`` (the
    difference per pair of twin blocks: sign-flip p ≤ α and bootstrap interval over seeds above
    ``min_effect``), else ``holds without weight decay``. The rules: docs/reproduce.md, "The tests".
    """
    direction = KNOBS[knob]
    decays = runs[WD].astype(float)
    treated = runs[decays > 0] if knob != WD else runs
    if knob != WD and treated.empty:
        why = "every run has λ = 0: the papers' B and μ effects come from weight decay"
        return NOT_APPLICABLE, why, pd.DataFrame(), []
    test = trend_test(_blocked(treated, knob), knob, direction, blocks=("block", "pair"), rng=rng)
    if test.n_blocks == 0:
        return NOT_ENOUGH, f"no block of runs with two or more values of {knob}", pd.DataFrame(), []
    table = test.blocks.assign(knob=knob, group="λ > 0" if knob != WD else "all")
    tests = [_test_dict("trend", test)]
    control = None
    if knob != WD and (decays == 0).any():
        control = trend_test(_blocked(runs[decays == 0], knob), knob, direction, blocks=("block", "pair"), rng=rng)
        if control.n_blocks:
            table = pd.concat([table, control.blocks.assign(knob=knob, group="λ = 0 control")], ignore_index=True)
            tests[0] |= _difference(test, control, rng)
        else:
            control = None
    if knob == WD and runs["train.batch_size"].nunique() > 1 and (decays == 0).sum() > 1:
        half = trend_test(_blocked(runs[decays == 0], "train.batch_size"), "train.batch_size", "smaller", rng=rng)
        if half.n_blocks:  # the papers' other half: without weight decay B barely matters
            tests.append(_test_dict("λ = 0: B effect (claimed ≈ 0)", half))
    decayed = treated[treated[WD].astype(float) > 0]["run_id"]
    stopped = convergence[convergence["run_id"].isin(decayed) & convergence["converged"].eq(False)]
    verdict, why = _decide(test, tests[0], control, knob, min_effect, len(stopped), len(decayed))
    return verdict, why, table, tests


def _difference(test: TrendTest, control: TrendTest, rng: int) -> dict:
    """The λ > 0 drop minus its λ = 0 twin block's drop, per pair of blocks (the λ > 0 blocks of a
    pair averaged): a sign-flip p-value over the pairs, and the mean over seeds with a bootstrap
    interval."""
    treated = test.blocks.groupby("pair").agg(drop=("drop", "mean"), seed=("seed", "first"))
    paired = treated.join(control.blocks.set_index("pair")["drop"].rename("control"), how="inner")
    differences = paired["drop"] - paired["control"]
    p, _ = sign_flip_p(differences.to_numpy(), rng)
    per_seed = differences.groupby(paired["seed"]).mean()
    low, high = bootstrap_mean(per_seed.to_numpy(), rng)
    return {"control_effect": control.effect, "control_ci_low": control.ci[0], "control_ci_high": control.ci[1],
            "difference": float(per_seed.mean()), "difference_p": p,
            "difference_ci_low": low, "difference_ci_high": high}


def _decide(test: TrendTest, numbers: dict, control, knob: str, min_effect: float, stopped: int, runs: int):
    effect = f"effect {test.effect:.1f} % of the full rank [{test.ci[0]:.1f}, {test.ci[1]:.1f}], p = {test.p:.3g}"
    if stopped:
        return INCONCLUSIVE, (
            f"not converged: {stopped} of {runs} runs with λ > 0 have not reached the norm equilibrium ({effect})"
        )
    if test.p_opposite <= ALPHA:
        return FAILS, f"the rank goes significantly the other way (p = {test.p_opposite:.3g}; {effect})"
    if len(test.seeds) < 2:
        return INCONCLUSIVE, f"too few seeds ({len(test.seeds)}) for an interval ({effect})"
    if test.ci[1] < min_effect:
        return FAILS, f"the whole interval lies below the minimum effect of {min_effect:g} % ({effect})"
    if test.p > ALPHA or test.ci[0] <= min_effect:
        if test.p > ALPHA:
            reason = f"p > {ALPHA}"
        else:
            reason = f"the interval reaches below the minimum effect of {min_effect:g} %"
        return INCONCLUSIVE, f"{reason} ({effect})"
    if knob == WD:
        return HOLDS, f"the rank falls as λ grows: {effect}"
    if control is None:
        return INCONCLUSIVE, f"no λ = 0 control runs to compare with ({effect})"
    low, p_difference = numbers["difference_ci_low"], numbers["difference_p"]
    if not (low > min_effect and p_difference <= ALPHA):
        return WITHOUT_WD, (f"the trend is not clearly larger than without weight decay: "
                            f"control effect {control.effect:.1f} % [{control.ci[0]:.1f}, {control.ci[1]:.1f}], "
                            f"difference {numbers['difference']:.1f} from {low:.1f}, p = {p_difference:.3g} ({effect})")
    return HOLDS, (f"{effect}; larger than without weight decay by {numbers['difference']:.1f} [{low:.1f}, "
                   f"{numbers['difference_ci_high']:.1f}], p = {p_difference:.3g} (control {control.effect:.1f} %)")


