"""Families 1, 5 and 6: quantities over training, one line per setting.

A setting run with several seeds is drawn as the mean over its replicates per epoch, with a
min–max band (``conventions.REPLICATE_KEYS``).

Every number is a stored record (``rb.load``): ``scalars.avg_rank`` (recomputed at another ε by
``api.rerank``), ``train_acc``/``test_acc``, ``train_loss``, ``distance``; ``layers.norm_ratio``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..store.records import as_results
from .select import counted_layers, rank_label, replicate_table, select
from .style import (
    colors,
    figure_legend,
    legend,
    line_name,
    mark_left_out,
    mean_band,
    new_figure,
    panel_title,
    rank_axis,
    styled,
)


def _has(values) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype=float)).any())


@styled
def rank_vs_epoch(results, vary=None, panel=None, where=None, runs=None, eps=None, norm=None) -> Figure:
    """Family 1: average rank per epoch (top) and train/test accuracy (bottom).

    One line per value of ``vary``, one column of panels per value of ``panel``; accuracy is
    solid for train, dashed for test (GSGP Figs. 2–13, GP Figs. 2–5). Regression runs (no
    accuracy) show train/test loss instead, log scale. The rank axis spans at least 10 % of the
    full rank (:func:`~rankbias.plots.style.rank_axis`).
    """
    res = as_results(results, eps, norm)
    sel = select(res, where, runs, vary=vary, panel=panel)
    scalars = sel.results.scalars
    classify = _has(scalars["test_acc"])
    lower = "acc" if classify else "loss"
    groups = sel.groups("panel")
    fig = new_figure(len(groups), 2, (3.2, 2.0))
    # panels side by side share their y-axis: a panel of noise must not look like the effect beside it
    axes = fig.subplots(
        2, len(groups), squeeze=False, sharex="col", sharey="row", gridspec_kw={"height_ratios": [3, 2]}
    )
    for j, (pval, members) in enumerate(groups):
        top, bottom = axes[0, j], axes[1, j]
        for _, vval, run_ids in sel.replicates(members):
            ranks = replicate_table(scalars, run_ids, "avg_rank")
            style = sel.style("vary", vval, len(ranks))
            name = line_name(sel, vval, run_ids)
            mean_band(top, ranks, label=name, **style)
            mark_left_out(top, sel, ranks)
            for part, dashes in (("train", "-"), ("test", "--")):
                table = replicate_table(scalars, run_ids, f"{part}_{lower}")
                mean_band(bottom, table, label=f"{name}, {part}", linestyle=dashes, **style)
        panel_title(top, sel, pval)
        bottom.set_xlabel("epoch")
        if not classify:
            bottom.set_yscale("log")
    rank_axis(axes[0, 0], sel)  # shared by the row: every panel
    axes[0, 0].set_ylabel(f"average rank\n({rank_label(sel, eps, norm)})")
    axes[1, 0].set_ylabel(
        "accuracy" if classify else ("MSE" if str(sel.runs["loss"].iloc[0]).startswith("mse") else "loss")
    )
    kinds = [Line2D([], [], color="0.3", label="train"), Line2D([], [], color="0.3", linestyle="--", label="test")]
    legend(fig, sel, "vary", kinds)
    return fig


@styled
def convergence(results, vary=None, panel=None, where=None, runs=None) -> Figure:
    """Family 5: GP's d(W_{t+1}, W_t), train loss and train accuracy per epoch, log scale (GP Fig. 1).

    ``distance`` is the stored mean over the weight matrices of ‖W_{t+1} − W_t‖_F between
    consecutive records (GP Sec. 5); with λ > 0 GP Prop. 1–2 predict it stays away from zero
    unless the weights collapse. One line per ``vary`` value, one column per ``panel`` value.
    """
    res = as_results(results)
    sel = select(res, where, runs, vary=vary, panel=panel)
    scalars = sel.results.scalars
    rows = [("distance", "$d(W_{t+1}, W_t)$", True), ("train_loss", "train loss", True)]
    if _has(scalars["train_acc"]):
        rows.append(("train_acc", "train accuracy", False))
    groups = sel.groups("panel")
    fig = new_figure(len(groups), len(rows), (3.2, 1.8))
    axes = fig.subplots(len(rows), len(groups), squeeze=False, sharex="col", sharey="row")
    for j, (pval, members) in enumerate(groups):
        for _, vval, run_ids in sel.replicates(members):
            for r, (column, _, _) in enumerate(rows):
                table = replicate_table(scalars, run_ids, column)
                mean_band(axes[r, j], table, label=line_name(sel, vval, run_ids), **sel.style("vary", vval, len(table)))
                mark_left_out(axes[r, j], sel, table)
        panel_title(axes[0, j], sel, pval)
        for r, (_, name, log) in enumerate(rows):
            if log:
                axes[r, j].set_yscale("log")
            if j == 0:
                axes[r, j].set_ylabel(name)
        axes[-1, j].set_xlabel("epoch")
    legend(fig, sel, "vary")
    return fig


@styled
def norm_ratio(results, panel=None, where=None, runs=None, layers="counted") -> Figure:
    """Family 6: per-layer ‖W_{t−1}‖_F / ‖W_t‖_F between consecutive records, over training.

    GSGP Thm. 3.3 assumes this ratio tends to 1 (GSGP Figs. 14–15). One panel per run (per value
    of ``panel``), one line per weight matrix (the mean over seed replicates); the dotted line is 1.
    """
    res = as_results(results)
    sel = select(res, where, runs, panel=panel)
    names = counted_layers(sel, layers)
    table = sel.results.layers
    groups = sel.groups("panel")
    fig = new_figure(len(groups), 1, (3.2, 2.6))
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    palette = colors(len(names))
    for ax, (pval, members) in zip(axes, groups):
        for k, name in enumerate(names):  # the runs of a panel are replicates of one setting
            ratios = replicate_table(table[table["layer"] == name], members["run_id"], "norm_ratio")
            mean_band(ax, ratios, color=palette[k], label=name, linewidth=1.0)
        ax.axhline(1.0, color="0.4", linestyle=":", linewidth=1.0)
        panel_title(ax, sel, pval)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(r"$\|W_{t-1}\|_F \,/\, \|W_t\|_F$")
    handles = [Line2D([], [], color=palette[k], label=n) for k, n in enumerate(names)] if len(names) <= 12 else []
    figure_legend(fig, sel, handles, "matrix" if handles else "")
    return fig


