"""Has a run reached the norm equilibrium that GSGP Theorem 3.3 assumes (‖W_{T−1}‖/‖W_T‖ → 1)?

A raw ratio over one step is always near 1 (a step changes W by about μ·λ'), so it cannot tell
a converged run from one whose weights are still shrinking. The drift measures the change of
the norm against what weight decay alone would do over the same steps::

    drift = ln(‖W_{t₀}‖_F / ‖W_t‖_F) / Σ_{steps s in (t₀, t]} μ_s·λ'

(λ' = ``optimizer.weight_decay``; weight decay alone multiplies W by (1 − μ_s·λ') each step, so
a drift of 1 is pure decay, 0 a norm that stays put, a negative drift a norm that grows; with
momentum β the decay's steady-state step is μ_s·λ'/(1 − β), and that is the sum taken). A run
has **converged** when the |drift| of the total norm of its counted matrices (√Σ‖W‖_F²) over
the last ``window`` of its training (a share of the epochs) is at most ``tolerance``. Runs
without weight decay have no such equilibrium to reach: NA.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._common import run_row, schedule

WINDOW = 0.25  # the last quarter of the epochs
TOLERANCE = 0.25  # the norm moved by at most a quarter of what weight decay alone would do


def decay_between(run: pd.Series, steps_per_epoch: float, first: int, last: int) -> float:
    """Σ μ_s·λ'/(1 − β) over the steps of epochs first+1 .. last (the run's schedule, momentum β)."""
    sched, lr0, wd = schedule(run), float(run["optimizer.lr"]), float(run["optimizer.weight_decay"])
    per_step = wd * lr0 / (1 - float(run["optimizer.momentum"]))
    return per_step * steps_per_epoch * sum(sched.multiplier(e) for e in range(first + 1, last + 1))


def norm_drift(
    results, *, window: float = WINDOW, tolerance: float = TOLERANCE, layer_level: bool = False
) -> pd.DataFrame:
    """One row per run (``layer_level``: per run and counted matrix) with the drift over the last
    ``window`` share of its recorded epochs (at least the last record interval).

    Columns: run_id, (layer), from_epoch, epoch, decay (Σ μ·λ' over the window), drift,
    converged (nullable: NA without weight decay or with fewer than two records), note.
    """
    layers = results.layers[results.layers["counted"]]
    scalars = results.scalars.set_index(["run_id", "epoch"])["step"]
    rows = []
    for run_id, group in layers.groupby("run_id", sort=False):
        run = run_row(results, run_id)
        epochs = sorted(group["epoch"].unique())
        wd = float(run["optimizer.weight_decay"])
        last = epochs[-1]
        earlier = [e for e in epochs if e <= last - max(1, round(window * last))] or epochs[:1]
        start = earlier[-1] if len(epochs) > 1 else last
        base = {"run_id": run_id, "from_epoch": int(start), "epoch": int(last)}
        if wd == 0 or start == last or last == 0:
            why = "no weight decay: no equilibrium to reach" if wd == 0 else "fewer than two records"
            rows += [base | {"layer": name, "decay": 0.0, "drift": math.nan, "converged": pd.NA, "note": why}
                     for name in (group["layer"].unique() if layer_level else ["all"])]  # fmt: skip
            continue
        decay = decay_between(run, float(scalars[(run_id, last)]) / last, int(start), int(last))
        norms = group.pivot(index="epoch", columns="layer", values="fro_norm")
        pairs = [(name, norms.at[start, name], norms.at[last, name]) for name in norms.columns] if layer_level else [
            ("all", float(np.sqrt((norms.loc[start] ** 2).sum())), float(np.sqrt((norms.loc[last] ** 2).sum())))]
        for name, before, after in pairs:
            drift = math.log(before / after) / decay if before > 0 and after > 0 else math.nan
            converged = bool(abs(drift) <= tolerance) if math.isfinite(drift) else False
            note = (f"the norm changed by {drift:+.2f} × what weight decay alone would do over epochs {start}–{last}"
                    f" (Σμλ' = {decay:.3g}); converged within ±{tolerance:g}: {converged}")
            rows.append(base | {"layer": name, "decay": decay, "drift": drift, "converged": converged, "note": note})
    columns = ["run_id", "layer", "from_epoch", "epoch", "decay", "drift", "converged", "note"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["converged"] = frame["converged"].astype("boolean")
    return frame if layer_level else frame.drop(columns="layer")
