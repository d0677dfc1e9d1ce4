"""CHEN Theorem 2.6 (seed 002, Sec. 2.2.2; experiments Sec. 4, Figs. 3 and 7).

Under Assumption 2.5 — every batch gradient of the regularized loss has norm ≤ ε — the first
layer V of the two-layer network is within C·ε of a matrix of rank ≤ 2 (rank 1 when the
regularization weight is constant), C depending on the batch size and the regularization only.
The paper states no numerical C, so this check reports the two sides separately: the norms of
the batch gradients (CHEN's histograms, against the Frobenius norm of a Gaussian matrix of the
same size, ≈ std·sqrt(rows·cols)) and V's distance to its best rank-1 and rank-2 matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..options import resolve_device
from ._common import table, tail_distance
from .gradients import as_matrix, batch_gradient, weight_matrices
from .live import live_run, random_batches


def chen_theorem_2_6(run_dir, *, batches: int | None = None, seed: int = 0, gaussian_std: float = 1.0, data_root=None,
                     device: str | torch.device = "cpu") -> pd.DataFrame:
    """CHEN Theorem 2.6 / Assumption 2.5 on a stored run's last checkpoint, per weight matrix.

    The training set is cut into random batches of the run's batch size (one epoch's worth, or
    the first ``batches``), and the gradient of the regularized batch loss (∇L + weight_decay·W,
    training mode) is taken at the final weights — CHEN take the batches of the last epoch
    along the trajectory; at the end of training the two agree up to one epoch's motion.

    Rows per matrix:
    - ``chen_assumption_2_5``: ``measured`` the largest batch-gradient norm (CHEN's ε),
      ``bound`` the Frobenius norm of a Gaussian matrix of the same shape with entries of
      std ``gaussian_std`` (CHEN's comparison), ``holds`` measured < bound; the ``norms``
      column holds every batch's norm (for the histogram).
    - ``chen_theorem_2_6``: ``measured`` the relative distance of V/‖V‖_F to its best rank-2
      matrix (``param`` rank 2) and rank-1 matrix (rank 1); no numerical bound (C unknown), so
      ``holds`` is NA; ``epsilon`` repeats the largest batch-gradient norm.
    """
    live = live_run(run_dir, data_root)
    config, data, device = live.config, live.data, resolve_device(device)
    x, y = data.x_train, data.y_train
    weights = [w for w in weight_matrices(live.model, x[0]) if w.m_l is not None]
    model = live.model.to(device)
    norms = {w.name: [] for w in weights}
    for index in random_batches(len(x), config.train.batch_size, batches, seed):
        grads = batch_gradient(model, weights, x[index].to(device), y[index].to(device), config.loss,
                               weight_decay=config.optimizer.weight_decay)
        for name, g in grads.items():
            norms[name].append(float(torch.linalg.matrix_norm(g.double())))
    params = dict(model.named_parameters())
    rows = []
    for w in weights:
        values = np.asarray(norms[w.name])
        reference = gaussian_std * math.sqrt(w.shape[0] * w.shape[1])
        eps = float(values.max())
        base = {"run_id": live.run_id, "layer": w.name, "epoch": live.epoch}
        param = f"{len(values)} batches of {config.train.batch_size}"
        note = f"median {np.median(values):.4g}; {np.mean(values < 2):.0%} below 2; Gaussian std {gaussian_std:g}"
        rows.append(base | {"check": "chen_assumption_2_5", "param": param,
                            "measured": eps, "bound": reference, "holds": eps < reference,
                            "note": note, "norms": values, "epsilon": eps})
        sv = torch.linalg.svdvals(as_matrix(w, params[w.param].detach()).double()).cpu().numpy()
        smaller = min(w.shape)
        for rank in (2, 1):
            if rank >= smaller:
                note = f"trivial: rank {rank} ≥ the smaller dimension {smaller}"
            else:
                note = f"CHEN: ‖V − V_{rank}‖ ≤ C·ε with ε = {eps:.4g}; C is not given numerically"
            stable_rank = float((sv**2).sum() / sv[0] ** 2) if sv[0] > 0 else 0.0
            rows.append(base | {"check": "chen_theorem_2_6", "param": f"rank {rank}",
                                "measured": tail_distance(sv, rank), "bound": math.nan, "holds": pd.NA,
                                "trivial": rank >= smaller, "note": note, "epsilon": eps, "stable_rank": stable_rank})
    return table(rows)
