"""GSGP Prediction 4.1 (seed 003, Sec. 4) on a sweep: pairs of runs that differ in one knob.

"When training a neural network using SGD with weight decay, the effective rank of the learned
weight matrices tends to decrease as the batch size decreases, or as the weight decay or
learning rate increases" — and (Sec. 4, Fig. 3; GP Fig. 3) without weight decay the batch size
and learning rate barely matter.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pandas as pd

from ..conventions import symbol
from ..summary import varied_keys

# the knob, and the direction in which the prediction says the rank falls
KNOBS = {"train.batch_size": "smaller", "optimizer.lr": "larger", "optimizer.weight_decay": "larger"}


class Agreement(NamedTuple):
    """The pairs table and the share of pairs that agree with the prediction (NaN: no pairs)."""

    table: pd.DataFrame
    share: float


def prediction_4_1(results, *, tie: float = 0.0, no_decay_tolerance: float = 0.1) -> Agreement:
    """Every pair of finished runs that differ in exactly one of B, μ, λ (all other config keys
    equal, seed included), compared on their final average rank (``scalars.avg_rank`` at the
    last record, at the ε the records were loaded with).

    Expected: the run with the smaller B, the larger μ or the larger λ has the lower rank
    (agrees when it is lower by more than ``tie``); for a pair varying B or μ without weight
    decay (λ = 0 in both), the ranks are similar (agrees when they differ by at most
    ``no_decay_tolerance`` × the larger). Runs that did not finish (diverged, failed, running)
    are left out and listed in ``Agreement.table.attrs["left_out"]``.

    Columns: knob (config key), symbol, run_id (the run predicted lower), other_run_id, value,
    other_value, weight_decay (of the pair, or both values), avg_rank, other_avg_rank,
    expected (``lower`` or ``similar``), observed (``lower``, ``higher``, ``equal`` within tie,
    or the relative change), agrees.
    """
    runs = results.runs
    done = runs[runs["state"] == "done"]
    left_out = runs.loc[runs["state"] != "done", "run_id"].tolist()
    final = results.scalars.sort_values("epoch").groupby("run_id")["avg_rank"].last()
    keys = varied_keys(done) if len(done) > 1 else []
    rows = []
    for knob, direction in KNOBS.items():
        if knob not in keys:
            continue
        others = [k for k in keys if k != knob]
        groups = done.groupby([done[k].astype(str) for k in others]) if others else [((), done)]
        for _, group in groups:
            for a, b in itertools.combinations(group.sort_values(knob).to_dict("records"), 2):
                rows.append(_pair(knob, direction, a, b, final, tie, no_decay_tolerance))
    columns = ["knob", "symbol", "run_id", "other_run_id", "value", "other_value", "weight_decay", "avg_rank",
               "other_avg_rank", "expected", "observed", "agrees"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["left_out"] = left_out
    share = float(frame["agrees"].mean()) if len(frame) else float("nan")
    return Agreement(frame, share)


def _pair(knob: str, direction: str, a: dict, b: dict, final: pd.Series, tie: float, tolerance: float) -> dict:
    # a has the smaller value of knob; "low" is the run the prediction says has the lower rank
    low, high = (a, b) if direction == "smaller" else (b, a)
    rank_low, rank_high = float(final[low["run_id"]]), float(final[high["run_id"]])
    wd_low, wd_high = float(low["optimizer.weight_decay"]), float(high["optimizer.weight_decay"])
    no_decay = knob != "optimizer.weight_decay" and wd_low == 0 and wd_high == 0
    if no_decay:
        change = abs(rank_low - rank_high) / max(rank_low, rank_high, 1e-12)
        expected, observed, agrees = "similar", f"{change:.1%} apart", change <= tolerance
    else:
        expected = "lower"
        diff = rank_low - rank_high
        observed = "lower" if diff < -tie else "higher" if diff > tie else "equal"
        agrees = observed == "lower"
    weight_decay = wd_low if wd_low == wd_high else f"{wd_low:g} vs {wd_high:g}"
    return {"knob": knob, "symbol": symbol(knob), "run_id": low["run_id"], "other_run_id": high["run_id"],
            "value": low[knob], "other_value": high[knob], "weight_decay": weight_decay, "avg_rank": rank_low,
            "other_avg_rank": rank_high, "expected": expected, "observed": observed, "agrees": bool(agrees)}
