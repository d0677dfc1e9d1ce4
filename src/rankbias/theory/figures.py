"""Figures of the theory checks, each a function of a check's table returning a matplotlib
``Figure`` built without pyplot (no GUI backend, no global state; ``fig.savefig(path)``
renders it with Agg; nothing is shown or written here), in the look of every rankbias figure
(:mod:`rankbias.plots.style`: Okabe–Ito colours, 8–9 pt text, constrained layout).

- :func:`theorem_3_3_figure`: GSGP Fig. 18 — the bound m_l·B·log(2/ε)/(2μλ) against the
  measured average ε-rank over ε, with the matrices' smaller dimension for scale.
- :func:`lemma_3_2_figure`: GSGP Lemma 3.2 — distance to rank ≤ m_l·B·n and its bound over n.
- :func:`batch_gradient_figure`: CHEN Figs. 3 and 7 — histogram of the batch-gradient norms
  against the norm of a Gaussian matrix of the same shape.
- :func:`gradient_rank_figure`: GSGP Lemma 3.1 / GP Lemmas 1–2 — measured rank and bound per matrix.
- :func:`prediction_figure`: GSGP Prediction 4.1 — per knob, the trend's effect with its interval,
  its λ = 0 control beside it, and the verdict.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import PlotError
from ..plots.style import colors, line_style, new_figure, styled
from .prediction import MIN_EFFECT


def _rows(table: pd.DataFrame, check: str, run_id: str | None) -> pd.DataFrame:
    rows = table[table["check"] == check]
    if run_id is not None:
        rows = rows[rows["run_id"] == run_id]
    if rows.empty:
        raise PlotError(f"the table has no {check} rows" + (f" for run {run_id}" if run_id else ""))
    return rows


@styled
def theorem_3_3_figure(table: pd.DataFrame, run_id: str | None = None, counted_only: bool = True,
                       labels: dict | None = None, styles: dict | None = None) -> Figure:
    """GSGP Fig. 18 from :func:`~rankbias.theory.theorem_3_3`'s table: per run, the mean over the
    (counted) matrices of the bound (solid) and of the measured ε-rank (dashed), against ε (log
    axes). ``labels``: run_id → legend text (default the run id), also the legend's order;
    ``styles``: run_id → colour and marker (a report gives each run the colour of its setting in
    the other figures; default the palette in legend order)."""
    rows = _rows(table, "gsgp_theorem_3_3", run_id)
    if counted_only and rows["counted"].any():
        rows = rows[rows["counted"].astype(bool)]
    fig = new_figure(panel_size=(4.6, 3.2))
    ax = fig.add_subplot()
    order = {r: i for i, r in enumerate(labels or {})}
    groups = sorted(rows.groupby("run_id"), key=lambda item: (order.get(item[0], len(order)), item[0]))
    for i, (run, group) in enumerate(groups):
        mean = group.groupby("eps")[["measured", "bound", "approx_rank", "smaller_dim"]].mean()
        style = (styles or {}).get(run) or line_style(i, len(groups))
        ax.plot(mean.index, mean["bound"], label=(labels or {}).get(run, run), **style)
        ax.plot(mean.index, mean["measured"], ls="--", **style)
        ax.axhline(mean["smaller_dim"].iloc[0], color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ε")
    ax.set_ylabel("rank (mean over matrices)")
    ax.set_title(
        "GSGP Thm 3.3 (Fig. 18): solid bound m_l·B·log(2/ε)/(2μλ),\n"
        "dashed measured ε-rank, dotted matrix size"
    )
    if ax.get_legend_handles_labels()[0]:  # a single run with nothing varied has no label
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


@styled
def lemma_3_2_figure(table: pd.DataFrame, run_id: str | None = None, epoch: int | None = None) -> Figure:
    """GSGP Lemma 3.2 from :func:`~rankbias.theory.lemma_3_2`'s table: per matrix, the measured
    distance (solid) and the bound (dashed) against n, at one epoch (default the last)."""
    rows = _rows(table, "gsgp_lemma_3_2", run_id)
    rows = rows[rows["run_id"] == rows["run_id"].iloc[0]]
    rows = rows[rows["epoch"] == (rows["epoch"].max() if epoch is None else epoch)]
    fig = new_figure(panel_size=(4.6, 3.2))
    ax = fig.add_subplot()
    layers = list(rows.groupby("layer", sort=False))
    for i, (layer, group) in enumerate(layers):
        group = group.sort_values("n")
        style = line_style(i, len(layers))
        ax.plot(group["n"], group["measured"], label=f"{layer}: distance to rank ≤ m_l·B·n", **style)
        ax.plot(group["n"], group["bound"], ls="--", label=f"{layer}: bound", **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("n (steps unrolled)")
    ax.set_ylabel("‖W_T/‖W_T‖ − W̄‖_F")
    ax.set_title(f"GSGP Lemma 3.2, run {rows['run_id'].iloc[0]}, epoch {rows['epoch'].iloc[0]}")
    ax.legend()
    return fig


@styled
def batch_gradient_figure(table: pd.DataFrame, run_id: str | None = None, layer: str | None = None) -> Figure:
    """CHEN Figs. 3/7 from :func:`~rankbias.theory.chen_theorem_2_6`'s table: the histogram of
    the batch-gradient norms of one matrix (default the first), with the Gaussian reference."""
    rows = _rows(table, "chen_assumption_2_5", run_id)
    row = rows.iloc[0] if layer is None else rows[rows["layer"] == layer].iloc[0]
    norms = np.asarray(row["norms"], dtype=float)
    fig = new_figure(panel_size=(4.6, 3.2))
    ax = fig.add_subplot()
    first, second = colors(2)
    ax.hist(norms, bins=min(30, max(5, len(norms) // 2)), color=first, alpha=0.8, label=f"{len(norms)} batches")
    ax.axvline(row["bound"], color=second, ls="--", label=f"Gaussian matrix of the same shape ≈ {row['bound']:.3g}")
    ax.set_xlabel(f"‖∇ L^λ_batch‖_F of {row['layer']}")
    ax.set_ylabel("batches")
    ax.set_title(f"CHEN Assumption 2.5, run {row['run_id']}, epoch {row['epoch']}")
    ax.legend()
    return fig


@styled
def gradient_rank_figure(table: pd.DataFrame, run_id: str | None = None) -> Figure:
    """GSGP Lemma 3.1 / GP Lemma 2 from :func:`~rankbias.theory.gradient_rank`'s table: the
    measured rank (bars) and the bound (markers) per matrix, one panel per check."""
    checks = [c for c in ("gsgp_lemma_3_1", "gp_lemma_2") if (table["check"] == c).any()]
    if not checks:
        raise PlotError("the table has no gradient-rank rows")
    fig = new_figure(nrows=len(checks), panel_size=(4.6, 3.0))
    first, second = colors(2)
    for i, check in enumerate(checks):
        rows = _rows(table, check, run_id)
        rows = rows[rows["run_id"] == rows["run_id"].iloc[0]].dropna(subset=["measured"])
        ax = fig.add_subplot(len(checks), 1, i + 1)
        x = np.arange(len(rows))
        ax.bar(x, rows["measured"].astype(float), color=first, label="measured rank (max over samples/batches)")
        ax.scatter(x, rows["bound"].astype(float), color=second, marker="_", s=400, label="bound")
        ax.set_xticks(x, rows["layer"], rotation=45, ha="right")
        ax.set_ylabel("rank")
        ax.set_title(check)
        ax.legend()
    return fig


@styled
def prediction_figure(table, min_effect: float = MIN_EFFECT) -> Figure:
    """GSGP Prediction 4.1 from :func:`~rankbias.theory.prediction_4_1`'s ``tests`` (or the
    :class:`~rankbias.theory.Prediction` itself): one bar per knob, its effect (the final average
    rank at the level predicted highest minus at the level predicted lowest, % of the full rank,
    mean over seeds) with its bootstrap interval as an error bar; beside it, in grey, the same
    effect among the λ = 0 control runs (B and μ); each knob annotated with its verdict. Dashed:
    the minimum effect (``min_effect`` %) a verdict of *holds* needs the whole interval above."""
    table = getattr(table, "tests", table)
    if table.empty:
        raise PlotError("the table has no knobs")
    fig = new_figure(panel_size=(max(3.6, 1.2 * len(table) + 1.2), 3.0))
    ax = fig.add_subplot()
    x = np.arange(len(table), dtype=float)
    column = lambda name: table[name].astype(float).to_numpy() if name in table else np.full(len(table), np.nan)
    control = column("control_effect")
    paired = bool(np.isfinite(control).any())
    width = 0.38 if paired else 0.6
    shift = width / 2 if paired else 0.0
    tops = [np.zeros(len(table))]
    treated = "λ > 0 (for λ: all runs)" if paired else "effect"
    bars = [(-shift, "", colors(1)[0], treated), (shift, "control_", "#999999", "λ = 0 control")]
    for offset, prefix, color, name in bars[: 1 + paired]:
        effect, low, high = column(prefix + "effect"), column(prefix + "ci_low"), column(prefix + "ci_high")
        drawn = np.isfinite(effect)
        ax.bar(x[drawn] + offset, effect[drawn], width, color=color, label=name)
        bounded = drawn & np.isfinite(low) & np.isfinite(high)
        if bounded.any():
            error = np.vstack([effect[bounded] - low[bounded], high[bounded] - effect[bounded]])
            ax.errorbar(x[bounded] + offset, effect[bounded], yerr=np.clip(error, 0, None), fmt="none",
                        ecolor="#000000", elinewidth=0.8, capsize=3)
        tops.append(np.where(bounded, high, np.where(drawn, effect, 0.0)))
    ax.axhline(0, color="#000000", lw=0.6)
    ax.axhline(min_effect, color="#999999", lw=0.8, ls="--", label=f"minimum effect {min_effect:g} %")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.35 * (high - low))  # room for the verdicts
    for xi, top, verdict in zip(x, np.nanmax(np.vstack(tops), axis=0), table["verdict"]):
        ax.annotate(textwrap.fill(str(verdict), 14), (xi, top), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, table["symbol"] if "symbol" in table else table["knob"])
    ax.set_xlim(-0.7, len(table) - 0.3)
    ax.set_ylabel("effect (% of the full rank)")
    ax.set_title("GSGP Prediction 4.1")
    ax.legend(loc="upper left", fontsize=7)
    return fig
