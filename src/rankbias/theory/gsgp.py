"""GSGP Lemma 3.2 and Theorem 3.3 on stored records (seed 003, Sec. 3).

The update of plain SGD (momentum 0) is ``W_{t+1} = (1 − 2μ_tλ) W_t − μ_t ∇L_batch``: unrolled n
steps, ``W_T = ∏(1 − 2μ_tλ) W_{T−n} + (a sum of n batch gradients)``, and each batch gradient has
rank ≤ m_l·B (Lemma 3.1). Hence (Lemma 3.2, Frobenius norm)::

    min_{rank(V) ≤ m_l·B·n} ‖W_T/‖W_T‖ − V‖ ≤ ∏_{t=T−n}^{T−1}(1 − 2μ_tλ) · ‖W_{T−n}‖ / ‖W_T‖

and, tuning n (Theorem 3.3, assuming ‖W_{T−1}‖/‖W_T‖ → 1), W_T/‖W_T‖ is within ε of a matrix of
rank ≤ m_l·B·log(2/ε)/(2μλ). Here ``2μλ = μ·weight_decay`` (:func:`._common.decay_factor`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..conventions import theory_lambda
from ..errors import ConfigError, RecordsError
from ..spectra.measures import eps_rank
from ._common import approximate_rank, decay_factor, last_epoch, run_row, schedule, table, tail_distance

THEOREM_3_3_EPS = (1e-3, 1e-2, 0.1, 0.3, 0.5)  # the ε of Thm 3.3 checked by default (GSGP Fig. 18)
STEP_NORMS_HINT = (
    "train with record.step_norms=k (k > 0) to record ‖W‖_F after each of the last k steps of each recorded epoch"
)


def lemma_3_2(results, n=None, *, step_norms: pd.DataFrame | None = None, atol: float = 1e-5) -> pd.DataFrame:
    """GSGP Lemma 3.2 (seed 003, Sec. 3) at every epoch with step norms, for every matrix.

    ``results``: :func:`rankbias.load`'s records; the step norms are ``results.step_norms`` (the
    table written when ``record.step_norms = k``: run_id, epoch, step, layer, fro_norm for the
    last k+1 step counts T−k … T of each recorded epoch) unless ``step_norms`` is given.
    ``n``: the numbers of steps to unroll (an int or a list; default every n the table allows).

    ``measured``: the Frobenius distance from W_T/‖W_T‖_F to the nearest matrix of rank
    ≤ m_l·B·n (Eckart–Young, from the epoch's stored singular values). ``bound``:
    ∏(1 − μ_t·weight_decay) over the n steps · ‖W_{T−n}‖_F/‖W_T‖_F, μ_t from the run's schedule
    (checked against the recorded lr). ``holds``: measured ≤ bound + ``atol`` (float32 records);
    NA for runs with momentum, to which the lemma does not apply. ``trivial``: bound ≥ 1 or
    m_l·B·n ≥ the smaller dimension. On a plain-SGD run a violation is a bug in the engine or
    in this check: the lemma is an identity-based bound.
    """
    norms = step_norms if step_norms is not None else getattr(results, "step_norms", None)
    if norms is None or len(norms) == 0:
        raise RecordsError(f"these records have no step norms: {STEP_NORMS_HINT}")
    wanted = None if n is None else sorted({int(v) for v in np.atleast_1d(n)})
    if wanted is not None and wanted[0] < 1:
        raise ConfigError("n", f"counts steps and must be at least 1, got {wanted[0]}")
    spectra = results.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    layers = results.layers.set_index(["run_id", "epoch", "layer"])
    scalars = results.scalars.set_index(["run_id", "epoch"])
    rows = []
    for (run_id, epoch), group in norms.groupby(["run_id", "epoch"], sort=True):
        by_step = group.pivot(index="step", columns="layer", values="fro_norm").sort_index()
        if len(by_step) < 2:  # epoch 0 (the initialization): no step to unroll
            continue
        run = run_row(results, run_id)
        T = int(by_step.index.max())
        recorded_step = int(scalars.at[(run_id, epoch), "step"])
        if T != recorded_step:
            raise RecordsError(
                f"run {run_id} epoch {epoch}: step norms end at step {T}, the record is at step {recorded_step}"
            )
        lr_at = _lr_per_update(run, T, int(epoch), float(scalars.at[(run_id, epoch), "lr"]))
        wd, batch = float(run["optimizer.weight_decay"]), int(run["train.batch_size"])
        momentum = float(run["optimizer.momentum"])
        available = [T - int(s) for s in by_step.index if s < T]
        for steps in sorted(available) if wanted is None else [v for v in wanted if v in available]:
            factor = math.prod(1 - decay_factor(lr_at(s), wd) for s in range(T - steps + 1, T + 1))
            for layer in by_step.columns:
                info = layers.loc[(run_id, epoch, layer)]
                cap = int(info["m_l"]) * batch * steps
                measured = tail_distance(spectra.loc[(run_id, epoch, layer)], cap)
                bound = factor * by_step.at[T - steps, layer] / by_step.at[T, layer]
                smaller = int(min(info["rows"], info["cols"]))
                rows.append(_lemma_row(run_id, layer, int(epoch), steps, cap, smaller, measured, bound, momentum, atol))
    if not rows:
        asked = "" if wanted is None else f" for n={wanted}"
        raise RecordsError(f"no epoch has step norms{asked} (n ≤ record.step_norms of the run): {STEP_NORMS_HINT}")
    return table(rows)


def _lemma_row(run_id, layer, epoch, steps, cap, smaller, measured, bound, momentum, atol) -> dict:
    notes = []
    trivial = bound >= 1 or cap >= smaller
    if cap >= smaller:
        notes.append(f"trivial: m_l·B·n = {cap} ≥ the smaller dimension {smaller}")
    elif bound >= 1:
        notes.append("trivial: bound ≥ 1 (the zero matrix is at distance 1)")
    holds = measured <= bound + atol
    if momentum > 0:
        holds = pd.NA
        notes.append(f"not applicable: momentum {momentum} (the lemma is for plain SGD)")
    elif not holds:
        notes.append("VIOLATED: the lemma is an identity on plain SGD, so the records or the engine are wrong")
    return {"check": "gsgp_lemma_3_2", "run_id": run_id, "layer": layer, "epoch": epoch, "param": f"n={steps}",
            "measured": measured, "bound": bound, "holds": holds, "trivial": trivial, "note": "; ".join(notes),
            "n": steps, "rank_cap": cap}


def _lr_per_update(run: pd.Series, T: int, epoch: int, recorded_lr: float):
    """μ of the update that produced step count s (1-based), from the run's schedule.

    Steps per epoch are constant (T / epoch); an update in an earlier epoch takes that epoch's
    learning rate, which may differ from the recorded one after a milestone.
    """
    per_epoch = T // epoch
    sched, lr0 = schedule(run), float(run["optimizer.lr"])
    if not math.isclose(lr0 * sched.multiplier(epoch), recorded_lr, rel_tol=1e-5):
        raise RecordsError(
            f"run {run['run_id']} epoch {epoch}: recorded lr {recorded_lr} "
            f"differs from its schedule's {lr0 * sched.multiplier(epoch)}"
        )
    return lambda s: lr0 * sched.multiplier((s - 1) // per_epoch + 1)


def theorem_3_3(results, eps=THEOREM_3_3_EPS, *, epoch: int | None = None) -> pd.DataFrame:
    """GSGP Theorem 3.3 (seed 003, Sec. 3) per matrix and ε, at the last record (or ``epoch``).

    ``bound``: m_l·B·n_ε, where n_ε is the number of steps, counted back from the record, over
    which Σ 2μ_tλ = Σ μ_t·weight_decay reaches log(2/ε) (the proof's unrolling: ∏(1 − 2μ_tλ) ≤
    ε/2), with μ_t the schedule's learning rate in force at each of those steps. At a constant
    rate this is the theorem's m_l·B·log(2/ε)/(2μλ); after a decay it uses the rates that were in
    force, not the last decayed value. ``lr_in_force``: the mean μ_t over the n_ε steps. When the
    whole training does not reach log(2/ε) the bound is infinite (trivial). ``measured``: the
    ε-rank (singular values of W/‖W‖_F above ε, as in GSGP Fig. 18); ``approx_rank``: the
    smallest rank within Frobenius distance ε of W/‖W‖_F, the quantity the theorem bounds (≥ the
    ε-rank). ``holds``: measured ≤ bound. ``norm_ratio``: the theorem's assumption
    ‖W_{T−1}‖/‖W_T‖ → 1, from the step norms when recorded (one step), else from the records
    (``record.every`` epochs apart; ``ratio_over`` says which). The theorem is asymptotic in T
    and for plain SGD: a failure at finite T or with momentum is not a bug. ``trivial``: bound ≥
    the smaller dimension (or no weight decay: bound = ∞).
    """
    eps_values = sorted(float(e) for e in np.atleast_1d(eps))
    if any(not 0 < e < 1 for e in eps_values):
        raise ConfigError("eps", f"must be in (0, 1), got {eps_values}")
    spectra = results.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    step_norms = getattr(results, "step_norms", None)
    rows = []
    for run_id in results.runs["run_id"]:
        if results.layers.empty or (results.layers["run_id"] == run_id).sum() == 0:
            continue
        run = run_row(results, run_id)
        at = last_epoch(results.layers, run_id) if epoch is None else epoch
        layers = results.layers[(results.layers["run_id"] == run_id) & (results.layers["epoch"] == at)]
        if layers.empty:
            raise RecordsError(f"run {run_id} has no record at epoch {at}")
        lr = float(results.scalars.set_index(["run_id", "epoch"]).at[(run_id, at), "lr"])
        steps_per_epoch = float(results.scalars.set_index(["run_id", "epoch"]).at[(run_id, at), "step"]) / max(at, 1)
        wd, batch = float(run["optimizer.weight_decay"]), int(run["train.batch_size"])
        momentum = float(run["optimizer.momentum"])
        ratios = _step_ratios(step_norms, run_id, at)
        for info in layers.itertuples():
            sv = np.asarray(spectra.loc[(run_id, at, info.layer)])
            if info.layer in ratios:
                ratio, over = ratios[info.layer], "1 step"
            else:
                ratio, over = info.norm_ratio, f"records (every {int(run['record.every'])} epochs)"
            for e in eps_values:
                steps = steps_to_decay(run, at, steps_per_epoch, math.log(2 / e))  # inf without weight decay
                bound = info.m_l * batch * steps
                measured = int(eps_rank(sv, e, "fro"))
                smaller = min(info.rows, info.cols)
                notes = [f"norm ratio {ratio:.6g} over {over} (assumed → 1)"]
                if wd == 0:
                    notes.append("trivial: no weight decay, the bound is infinite")
                elif not math.isfinite(steps):
                    notes.append(f"trivial: the whole training's Σμλ' is below log(2/ε) = {math.log(2 / e):.3g}")
                elif bound >= smaller:
                    notes.append(f"trivial: bound ≥ the smaller dimension {smaller}")
                if momentum > 0:
                    notes.append(f"momentum {momentum}: the theorem is for plain SGD")
                if lr * theory_lambda(wd) >= 0.5:
                    notes.append("μλ ≥ 0.5: outside the theorem's premise")
                if measured > bound:
                    notes.append("fails at this T (the theorem holds for sufficiently large T)")
                lr_in_force = math.log(2 / e) / (steps * wd) if wd > 0 and math.isfinite(steps) else math.nan
                rows.append({"check": "gsgp_theorem_3_3", "run_id": run_id, "layer": info.layer, "epoch": at,
                             "param": f"eps={e:g}", "measured": measured, "bound": bound, "holds": measured <= bound,
                             "trivial": bound >= smaller, "note": "; ".join(notes), "eps": e,
                             "approx_rank": approximate_rank(sv, e), "norm_ratio": ratio, "ratio_over": over,
                             "counted": bool(info.counted), "smaller_dim": smaller, "steps": steps,
                             "lr_in_force": lr_in_force})
    return table(rows)


def steps_to_decay(run: pd.Series, epoch: int, steps_per_epoch: float, target: float) -> float:
    """n_ε of :func:`theorem_3_3`: the steps, counted back from the end of ``epoch``, over which
    Σ μ_t·weight_decay reaches ``target`` = log(2/ε) (fractional within an epoch; inf when the
    whole training does not reach it). μ_t: the run's schedule, epoch by epoch."""
    sched, lr0, wd = schedule(run), float(run["optimizer.lr"]), float(run["optimizer.weight_decay"])
    total, steps = 0.0, 0.0
    for e in range(epoch, 0, -1):
        rate = lr0 * sched.multiplier(e) * wd
        if rate > 0 and total + rate * steps_per_epoch >= target:
            return steps + (target - total) / rate
        total, steps = total + rate * steps_per_epoch, steps + steps_per_epoch
    return math.inf


def _step_ratios(step_norms, run_id, epoch) -> dict:
    """‖W_{T−1}‖/‖W_T‖ per layer from the step norms of (run, epoch), when recorded."""
    if step_norms is None or len(step_norms) == 0:
        return {}
    here = step_norms[(step_norms["run_id"] == run_id) & (step_norms["epoch"] == epoch)]
    if here["step"].nunique() < 2:
        return {}
    T = here["step"].max()
    last = here[here["step"] == T].set_index("layer")["fro_norm"]
    before = here[here["step"] == T - 1].set_index("layer")["fro_norm"]
    return (before / last).dropna().to_dict()
