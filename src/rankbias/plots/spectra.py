"""Families 4, 8 and 9: figures drawn from the stored singular values (``spectra.sv``).

Normalization and thresholds go through :mod:`rankbias.spectra.measures`, the functions that
computed the stored ranks, so a rank read off these figures is the rank ``rb.load(eps=...)``
gives. A setting run with several seeds is drawn as the mean over its replicates, with a min–max
band (family 9, an image per run, shows every replicate).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import PlotError
from ..spectra.measures import eps_rank, frobenius_norm, spectral_norm
from ..store.records import as_results
from .select import Selection, at_epoch, counted_layers, select
from .style import CMAP, grid_shape, legend, line_name, mean_band, new_figure, panel_title, styled

FLOOR = 1e-8  # smallest σ/‖W‖ drawn (float32 singular values carry ~7 digits)
NORM_TEX = {"fro": r"\|W\|_F", "spectral": r"\|W\|_2"}


def _norm_of(selection: Selection, run_id: str, norm: str | None) -> str:
    return norm or selection.runs.set_index("run_id").at[run_id, "record.norm"]


def _eps_of(selection: Selection, run_id: str, eps: float | None) -> float:
    return eps if eps is not None else float(selection.runs.set_index("run_id").at[run_id, "record.eps"])


def normalized(sv: np.ndarray, norm: str) -> np.ndarray:
    """σ / ‖W‖ (Frobenius or spectral, from the singular values): what ε thresholds."""
    scale = np.asarray(frobenius_norm(sv) if norm == "fro" else spectral_norm(sv))
    return sv / np.where(scale > 0, scale, 1.0)[..., None]


def _spectra(selection: Selection) -> pd.Series:
    return selection.results.spectra.set_index(["run_id", "epoch", "layer"])["sv"]


@styled
def layer_spectra(
    results, vary=None, where=None, runs=None, epoch=None, layers="counted", eps=None, norm=None
) -> Figure:
    """Family 4: each matrix's normalized singular values σ_i/‖W‖, sorted, log scale, one curve
    per ``vary`` value, one panel per matrix; the dashed line is ε, so the rank is the number of
    points above it (GSGP Figs. 16–17; CHEN's spectra of V for small and large λ). Seed
    replicates: the mean of their σ_i/‖W‖ per index i, with a min–max band (the points of the
    mean above ε count the rank of no single run).
    """
    res = as_results(results)
    sel = select(res, where, runs, vary=vary)
    names = counted_layers(sel, layers)
    sv = _spectra(sel)
    final = at_epoch(sel.results.layers, epoch)
    nrows, ncols = grid_shape(len(names))
    fig = new_figure(ncols, nrows, (2.8, 2.3))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()  # one scale: spectra compare across panels
    for ax, name in zip(axes, names):
        thresholds = set()
        for _, vval, run_ids in sel.replicates(sel.runs):
            curves = {}
            for run_id in run_ids:
                row = final[(final["run_id"] == run_id) & (final["layer"] == name)]
                if row.empty:
                    continue
                stored = np.asarray(sv.at[(run_id, int(row["epoch"].iloc[0]), name)], dtype=np.float64)
                points = normalized(stored, _norm_of(sel, run_id, norm))
                curves[run_id] = pd.Series(points, index=np.arange(1, len(points) + 1))
                thresholds.add(_eps_of(sel, run_id, eps))
            if curves:
                table = pd.DataFrame(curves)
                mean_band(ax, table, label=line_name(sel, vval, list(curves)), **sel.style("vary", vval, len(table)))
        for t in thresholds:
            ax.axhline(t, color="0.3", linestyle="--", linewidth=0.9)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, FLOOR), high)  # below ~1e-8 of the norm: float32 round-off, not structure
        ax.set_title(name)
        ax.set_xlabel("index i")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    norms = {_norm_of(sel, r, norm) for r in sel.runs["run_id"]}
    tex = NORM_TEX[norms.pop()] if len(norms) == 1 else r"\|W\|"
    for ax in axes[::ncols]:
        ax.set_ylabel(rf"$\sigma_i / {tex}$")
    legend(fig, sel, "vary")
    return fig


def average_rank_over_eps(
    selection: Selection, run_id: str, epoch: int, names: list[str], eps_grid: np.ndarray, norm: str
) -> np.ndarray:
    """Mean over the matrices ``names`` the run has (runs of different models have different
    matrices) of their ε-rank at every ε of ``eps_grid`` (measures.eps_rank)."""
    sv = _spectra(selection)
    keys = [(run_id, epoch, name) for name in names if (run_id, epoch, name) in sv.index]
    ranks = [eps_rank(np.asarray(sv.at[key]), eps_grid[:, None], norm) for key in keys]
    return np.mean(ranks, axis=0)


@styled
def rank_vs_eps(
    results, vary=None, panel=None, where=None, runs=None, epoch=None, layer=None, norm=None, eps_grid=None
) -> Figure:
    """Family 8: the average rank (or ``layer``'s rank) against the threshold ε, from the stored
    singular values, one line per run (seed replicates: their mean, with a min–max band), so a
    reader sees how ε changes the answer; the dotted line marks each run's ``record.eps``.
    ``eps_grid`` defaults to 60 values from 1e-6 to 0.5.
    """
    res = as_results(results)
    sel = select(res, where, runs, vary=vary, panel=panel)
    grid = np.asarray(eps_grid if eps_grid is not None else np.logspace(-6, np.log10(0.5), 60), dtype=np.float64)
    if grid.ndim != 1 or not ((grid > 0) & (grid < 1)).all():
        raise PlotError("eps_grid must be a list of thresholds in (0, 1)")
    names = counted_layers(sel, "counted") if layer is None else counted_layers(sel, [layer])
    groups = sel.groups("panel")
    fig = new_figure(len(groups), 1, (3.2, 2.6))
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    final = at_epoch(sel.results.scalars, epoch).set_index("run_id")["epoch"]
    for ax, (pval, members) in zip(axes, groups):
        marks = set()
        for _, vval, run_ids in sel.replicates(members):
            ranks = {
                r: average_rank_over_eps(sel, r, int(final[r]), names, grid, _norm_of(sel, r, norm)) for r in run_ids
            }
            mean_band(
                ax,
                pd.DataFrame(ranks, index=grid),
                label=line_name(sel, vval, run_ids),
                **sel.style("vary", vval, len(grid)),
            )
            marks.update(_eps_of(sel, r, None) for r in run_ids)
        for m in marks:
            ax.axvline(m, color="0.3", linestyle=":", linewidth=1.0)
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        panel_title(ax, sel, pval)
    what = "average rank" if layer is None else f"rank of {layer}"
    norms = {_norm_of(sel, r, norm) for r in sel.runs["run_id"]}
    axes[0].set_ylabel(what + (" (spectral norm)" if norms == {"spectral"} else ""))
    legend(fig, sel, "vary")
    return fig


@styled
def spectra_over_training(results, layer=None, panel=None, where=None, runs=None, norm=None, eps=None) -> Figure:
    """Family 9: one matrix's singular values at every recorded epoch, as an image: epoch
    (x) × index i (y, 1 at the bottom: the largest σ), colour log₁₀(σ_i/‖W‖). The white contour is
    ε: the indices below it have σ_i/‖W‖ > ε, so the rank at an epoch is the height of the contour.
    One panel per run (per value of ``panel``; seed replicates each get their own, titled with the
    run), one colour scale. ``layer`` defaults to the first counted matrix.
    """
    res = as_results(results)
    sel = select(res, where, runs, panel=panel)
    name = layer or counted_layers(sel, "counted")[0]
    counted_layers(sel, [name])
    sv = sel.results.spectra
    sv = sv[sv["layer"] == name]
    groups = sel.groups("panel")
    images = []
    for pval, members in groups:
        for run_id in members["run_id"]:
            rows = sv[sv["run_id"] == run_id].sort_values("epoch")
            stack = np.stack([np.asarray(v, dtype=np.float64) for v in rows["sv"]])
            logs = np.log10(np.maximum(normalized(stack, _norm_of(sel, run_id, norm)), FLOOR))
            setting = sel.label("panel", pval)
            run = f"run {run_id}" if not setting or len(members) > 1 else ""  # replicates: one panel each
            images.append((", ".join(t for t in (name, setting, run) if t), run_id, rows["epoch"].to_numpy(), logs))
    low = min(float(np.min(img[3])) for img in images)
    high = max(float(np.max(img[3])) for img in images)
    nrows, ncols = grid_shape(len(images), 3)
    fig = new_figure(ncols, nrows, (3.2, 2.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, run_id, epochs, logs) in zip(axes, images):
        index = np.arange(1, logs.shape[1] + 1)
        mesh = ax.pcolormesh(_edges(epochs), _edges(index), logs.T, cmap=CMAP, vmin=low, vmax=high, shading="flat")
        threshold = np.log10(_eps_of(sel, run_id, eps))
        if logs.min() < threshold < logs.max() and len(epochs) > 1:
            ax.contour(epochs, index, logs.T, levels=[threshold], colors="white", linewidths=1.0, linestyles="solid")
        ax.set_xlabel("epoch")
        ax.set_ylabel("index i")
        ax.grid(False)
        ax.set_title(title)
    for ax in axes[len(images) :]:
        ax.set_visible(False)
    norms = {_norm_of(sel, r, norm) for r in sel.runs["run_id"]}
    tex = NORM_TEX[norms.pop()] if len(norms) == 1 else r"\|W\|"
    fig.colorbar(mesh, ax=list(axes[: len(images)]), label=rf"$\log_{{10}}\,\sigma_i / {tex}$")
    return fig


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around increasing ``centers`` (midpoints; half a step beyond the ends)."""
    centers = np.asarray(centers, dtype=np.float64)
    if len(centers) == 1:
        return np.array([centers[0] - 0.5, centers[0] + 0.5])
    mid = (centers[1:] + centers[:-1]) / 2
    return np.concatenate([[centers[0] - (mid[0] - centers[0])], mid, [centers[-1] + (centers[-1] - mid[-1])]])

