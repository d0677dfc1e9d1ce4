"""GP (seed 001): Theorem 1 on a stored network, and the SGD-noise claim of Propositions 1–2.

Theorem 1 (Sec. 3.2): for any batch S̃ of size B*, ``∇_W L^λ_S̃ = ∇_W L_S̃ + 2λW`` and
``∇_W L_S̃`` has rank ≤ B* (m_l·B* for a convolution; GP Lemmas 1–2, with or without batch norm),
so ``min_{rank(V) ≤ B*} ‖W − V‖ ≤ (1/2λ)·min_S̃ ‖∇_W L^λ_S̃‖``. λ = weight_decay/2, so 1/(2λ) is
1/weight_decay.

Propositions 1–2 (Sec. 3.1): with λ > 0 mini-batch SGD can converge only to the zero function
(or on collinear data); on real data the weights either collapse towards zero or
``d(W_{t+1}, W_t)`` stays bounded away from zero (GP Fig. 1), while without weight decay it may
tend to zero.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..conventions import theory_lambda
from ..options import resolve_device
from ..store.records import varied_keys
from ._common import last_epoch, run_row, table
from .gradients import as_matrix, batch_gradient, weight_matrices
from .live import live_run, random_batches


def gp_theorem_1(run_dir, *, batch_size: int | None = None, batches: int = 16, seed: int = 0, data_root=None,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> pd.DataFrame:
    """GP Theorem 1 (seed 001, Eq. 10) on a stored run's last checkpoint, per weight matrix.

    ``batch_size``: B* (default the run's batch size); ``batches``: how many random disjoint
    batches of size B* the minimum is taken over. ``measured``: ‖W − W_r‖_F, the Frobenius
    distance of W (not normalized) to its best approximation of rank r = m_l·B* (Eckart–Young).
    ``bound``: (1/2λ)·min over the batches of ‖∇_W L^λ_S̃‖_F, the regularized batch loss's
    gradient in training mode (batch norm on the batch's statistics). Computed in ``dtype`` on ``device``;
    ``holds``: measured ≤ bound (the theorem is an identity, so it must hold). ``trivial``:
    bound ≥ ‖W‖_F (the zero matrix is that close) or r ≥ the smaller dimension.
    """
    live = live_run(run_dir, data_root)
    config, data = live.config, live.data
    size = batch_size or config.train.batch_size
    wd = config.optimizer.weight_decay
    device = resolve_device(device)
    x, y = data.x_train, data.y_train
    weights = [w for w in weight_matrices(live.model, x[0]) if w.m_l is not None]
    model = live.model.to(device, dtype)
    norms = {w.name: [] for w in weights}
    for index in random_batches(len(x), size, batches, seed):
        yb = y[index].to(device, dtype) if y.is_floating_point() else y[index].to(device)
        grads = batch_gradient(model, weights, x[index].to(device, dtype), yb, config.loss, weight_decay=wd)
        for name, g in grads.items():
            norms[name].append(float(torch.linalg.matrix_norm(g)))
    params = dict(model.named_parameters())
    rows = []
    for w in weights:
        matrix = as_matrix(w, params[w.param].detach())
        sv = torch.linalg.svdvals(matrix).cpu().numpy()
        cap = w.bound * size
        measured = float(np.sqrt((sv[cap:] ** 2).sum()))
        fro = float(np.sqrt((sv**2).sum()))
        bound = math.inf if wd == 0 else min(norms[w.name]) / (2 * theory_lambda(wd))
        smaller = min(w.shape)
        notes = [f"min over {len(norms[w.name])} batches; median gradient norm {np.median(norms[w.name]):.4g}"]
        if wd == 0:
            notes.append("trivial: no weight decay, the bound is infinite")
        elif cap >= smaller:
            notes.append(f"trivial: m_l·B* = {cap} ≥ the smaller dimension {smaller}")
        elif bound >= fro:
            notes.append(f"trivial: bound ≥ ‖W‖_F = {fro:.4g}")
        holds = measured <= bound * (1 + 1e-9) + 1e-12
        if not holds:
            notes.append("VIOLATED: the theorem is an identity, so the gradient or the records are wrong")
        trivial = wd == 0 or cap >= smaller or bound >= fro
        rows.append({"check": "gp_theorem_1", "run_id": live.run_id, "layer": w.name, "epoch": live.epoch,
                     "param": f"B*={size}", "measured": measured, "bound": bound, "holds": holds, "trivial": trivial,
                     "note": "; ".join(notes), "rank_cap": cap, "fro_norm": fro})
    return table(rows)


def sgd_noise(results, *, collapse: float = 1e-2, floor: float = 1e-3) -> pd.DataFrame:
    """GP Propositions 1–2 (seed 001, Sec. 3.1 and Fig. 1) at each run's last record.

    ``measured``: GP's d(W_{t+1}, W_t) at the last record (``scalars.distance``: the mean over
    weight matrices of ‖W_t − W_{t'}‖_F since the previous record). For a run with weight decay,
    ``holds`` when the weights collapsed (mean ‖W_T‖_F / mean ‖W_0‖_F < ``collapse``) or when
    d stays above ``bound``: the same run without weight decay (all other config keys equal)
    when the results hold one — GP see d orders of magnitude smaller there — else ``floor``
    times the mean ‖W_T‖_F. Runs without weight decay are the baselines (holds NA).
    ``relative_distance``: d / mean ‖W_T‖_F; ``norm_shrink``: mean ‖W_T‖ / mean ‖W_0‖.
    """
    runs = results.runs
    keys = [k for k in varied_keys(runs) if k != "optimizer.weight_decay"]
    baselines = runs[runs["optimizer.weight_decay"] == 0]
    rows = []
    for run_id in runs["run_id"]:
        if (results.scalars["run_id"] == run_id).sum() == 0:
            continue
        at = last_epoch(results.scalars, run_id)
        scal = results.scalars[results.scalars["run_id"] == run_id].set_index("epoch")
        lay = results.layers[results.layers["run_id"] == run_id]
        first, last = lay[lay["epoch"] == lay["epoch"].min()], lay[lay["epoch"] == at]
        d = float(scal.at[at, "distance"])
        mean_norm = float(last["fro_norm"].mean())
        shrink = mean_norm / float(first["fro_norm"].mean())
        epochs = sorted(scal.index)
        interval = at - epochs[-2] if len(epochs) > 1 else 0
        wd = float(run_row(results, run_id)["optimizer.weight_decay"])
        row = {"check": "gp_sgd_noise", "run_id": run_id, "layer": "all", "epoch": at, "param": f"weight_decay={wd:g}",
               "measured": d, "relative_distance": d / mean_norm if mean_norm > 0 else math.nan, "norm_shrink": shrink,
               "interval": interval}
        if wd == 0:
            rows.append(row | {"note": "baseline without weight decay (Prop. 2: convergence is possible)"})
            continue
        if not math.isfinite(d):
            rows.append(row | {"note": "no distance recorded (a single record, or a diverged run): no prediction"})
            continue
        twin = _twin(run_row(results, run_id), baselines, keys)
        if twin is not None and (results.scalars["run_id"] == twin).any():
            bound = float(results.scalars[results.scalars["run_id"] == twin].sort_values("epoch")["distance"].iloc[-1])
            against = f"the run without weight decay ({twin})"
        else:
            twin, bound = None, floor * mean_norm
            against = f"{floor:g} × mean ‖W_T‖_F (no run without weight decay to compare)"
        collapsed = shrink < collapse
        if collapsed:
            note = f"weights collapsed towards zero: mean ‖W_T‖/‖W_0‖ = {shrink:.3g} (Prop. 1: the zero function)"
        elif d > bound:
            note = f"d(W_t+1, W_t) stays away from zero: above {against}"
        else:
            note = f"d(W_t+1, W_t) is not above {against}: SGD may be converging"
        rows.append(row | {"bound": bound, "holds": collapsed or d > bound,
                           "note": note + f"; d over the last {interval} epoch(s)", "twin_run_id": twin})
    return table(rows)


def _twin(run: pd.Series, baselines: pd.DataFrame, keys: list[str]) -> str | None:
    """The run of ``baselines`` equal to ``run`` in every varied key but the weight decay."""
    same = baselines
    for key in keys:
        same = same[same[key].astype(str) == str(run[key])]
    return None if same.empty else str(same["run_id"].iloc[0])
