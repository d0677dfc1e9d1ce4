"""Families 2, 3 and 7: the final records of a sweep against its hyperparameters.

"Final" is each run's last record (``epoch=None``; a diverged run's last record before it
diverged) or the record at ``epoch``. Every value is a stored record: ``scalars`` for the
heatmap, ``layers.eps_rank``/``stable_rank`` per matrix. A setting run with several seeds is
drawn as the mean over its replicates (lines with a min–max band).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..conventions import symbol
from ..store.records import as_results
from .select import (
    PlotError,
    at_epoch,
    counted_layers,
    fmt,
    rank_label,
    replicate_table,
    same_value,
    select,
)
from .style import CMAP, full_rank, legend, line_name, mean_band, new_figure, panel_title, styled

SCALARS = {
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "test_loss": "test loss",
    "train_loss": "train loss",
}
MEASURES = {"eps_rank": "rank", "stable_rank": "stable rank", "effective_rank": "effective rank"}


@styled
def rank_heatmap(
    results, x=None, y=None, panel=None, where=None, runs=None, value="avg_rank", epoch=None, eps=None, norm=None
) -> Figure:
    """Family 2: a ``scalars`` column (default the average rank) at the end of training over two
    hyperparameters, every cell annotated (GSGP Fig. 1). One heatmap per value of ``panel``, one
    colour scale for all; a diverged run's cell says so, a missing run's cell is blank. A cell of
    seed replicates is their mean (over those that did not diverge; the colour bar says "mean of N
    seeds", a cell with diverged replicates says how many).
    """
    res = as_results(results, eps, norm)
    sel = select(res, where, runs, x=x, y=y, panel=panel)
    if sel.keys["x"] is None or sel.keys["y"] is None:
        raise PlotError("a heatmap needs two hyperparameters that vary between the runs (x and y)")
    if value not in sel.results.scalars.columns:
        raise PlotError(f"no scalar column {value!r}; columns: {', '.join(sel.results.scalars.columns)}")
    final = at_epoch(sel.results.scalars, epoch).set_index("run_id")[value]
    xs, ys = sel.values("x"), sel.values("y")
    groups = sel.groups("panel")
    state = sel.runs.set_index("run_id")["state"]
    grids = [_cells(members, sel.keys, xs, ys, final, state) for _, members in groups]
    unlearned = {r for r, why in sel.left_out().items() if why == "did not learn"}
    fig = new_figure(len(groups), 1, (0.7 * len(xs) + 1.6, 0.45 * len(ys) + 1.2))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    finite = np.concatenate([grid[np.isfinite(grid)] for grid, _, _ in grids])
    scale = _scale(value, finite, sel)
    for ax, (pval, members), (grid, diverged, size) in zip(axes, groups, grids):
        image = ax.imshow(grid, cmap=CMAP, norm=scale, aspect="auto", origin="lower")
        low = _cells(members[members["run_id"].isin(unlearned)], sel.keys, xs, ys, final, state)[2]
        for i, j in zip(*np.nonzero(np.isfinite(grid) | (diverged > 0))):
            if not np.isfinite(grid[i, j]):
                text = "diverged"
            else:
                text = f"{grid[i, j]:.3g}" + (f"\n{diverged[i, j]} of {size[i, j]} diverged" if diverged[i, j] else "")
            if low[i, j]:
                text += f"\n{low[i, j]} did not learn" if size[i, j] > 1 else "\ndid not learn"
            _annotate(ax, image, i, j, text)
        ax.set_xticks(range(len(xs)), [fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)), [fmt(v) for v in ys])
        ax.set_xlabel(symbol(sel.keys["x"]))
        ax.set_ylabel(symbol(sel.keys["y"]))
        ax.grid(False)
        panel_title(ax, sel, pval)
    what = f"average rank ({rank_label(sel, eps, norm)})" if value == "avg_rank" else SCALARS.get(value, value)
    note = sel.replicate_note(band=False)
    label = f"final {what}" if epoch is None else f"{what} at epoch {epoch}"
    fig.colorbar(image, ax=list(axes), label=f"{label}\n({note})" if note else label)
    return fig


def _scale(value: str, finite: np.ndarray, selection) -> Normalize:
    """The colour scale over the quantity's whole range, so a small difference looks small:
    accuracy 0 to 1, the average rank 0 to the full rank (the largest mean smaller dimension of
    the counted matrices); any other column its data's range."""
    if value.endswith("_acc"):
        return Normalize(0.0, 1.0)
    if value == "avg_rank" and (full := full_rank(selection)) is not None:
        return Normalize(0.0, full)
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    return Normalize(low, high if high > low else low + 1.0)


def _cells(members: pd.DataFrame, keys: dict, xs: list, ys: list, final: pd.Series, state: pd.Series):
    """(value, diverged, size) grids of one heatmap: per cell the mean of ``final`` over its runs
    that did not diverge (NaN if none), how many diverged, and how many runs it has."""
    cells = {}
    for _, row in members.iterrows():
        cell = ys.index(_pick(ys, row[keys["y"]])), xs.index(_pick(xs, row[keys["x"]]))
        cells.setdefault(cell, []).append(row["run_id"])
    grid = np.full((len(ys), len(xs)), np.nan)
    diverged, size = np.zeros(grid.shape, dtype=int), np.zeros(grid.shape, dtype=int)
    for cell, run_ids in cells.items():
        kept = [final.get(r, np.nan) for r in run_ids if state[r] != "diverged"]
        diverged[cell], size[cell] = len(run_ids) - len(kept), len(run_ids)
        grid[cell] = np.mean(kept) if kept else np.nan
    return grid, diverged, size


def _annotate(ax, image, i: int, j: int, text: str) -> None:
    """Write ``text`` in cell (i, j), black on light colours and white on dark ones."""
    value = image.get_array()[i, j]
    shade = image.cmap(image.norm(value)) if np.isfinite(value) else (1.0, 1.0, 1.0, 1.0)
    light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.55  # ITU-R BT.601 luma
    ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if light else "white")


def _pick(values: list, value):
    """The entry of ``values`` equal to ``value`` (numbers with a tolerance)."""
    return next(v for v in values if same_value(v, value))


@styled
def layer_ranks(
    results,
    vary=None,
    panel=None,
    where=None,
    runs=None,
    epoch=None,
    measure="eps_rank",
    layers="counted",
    eps=None,
    norm=None,
) -> Figure:
    """Family 3: each weight matrix's rank against its index in the network, one line per
    ``vary`` value, one panel per ``panel`` value (GP Figs. 6–7: a bottleneck in the middle layers
    of MLP-BN, balanced ranks in residual networks). ``measure``: eps_rank, stable_rank or
    effective_rank (columns of ``layers``). Seed replicates: their mean, with a min–max band.
    """
    if measure not in MEASURES:
        raise PlotError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    res = as_results(results, eps, norm)
    sel = select(res, where, runs, vary=vary, panel=panel)
    names = counted_layers(sel, layers)
    table = at_epoch(sel.results.layers, epoch)
    table = table[table["layer"].isin(names)]
    groups = sel.groups("panel")
    fig = new_figure(len(groups), 1, (3.4, 2.6))
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    for ax, (pval, members) in zip(axes, groups):
        for _, vval, run_ids in sel.replicates(members):
            ranks = replicate_table(table, run_ids, measure, by="index")
            mean_band(ax, ranks, label=line_name(sel, vval, run_ids), **sel.style("vary", vval))
        ax.set_xlabel("layer index")
        positions = table.drop_duplicates("layer").sort_values("index")
        if len(positions) <= 12:
            ax.set_xticks(positions["index"], positions["layer"], rotation=45, ha="right")
        panel_title(ax, sel, pval)
    name = MEASURES[measure]
    axes[0].set_ylabel(f"{name} ({rank_label(sel, eps, norm)})" if measure == "eps_rank" else name)
    legend(fig, sel, "vary")
    return fig


@styled
def weight_decay_generalization(results, vary=None, where=None, runs=None, layer=None, epoch=None) -> Figure:
    """Family 7 (CHEN Sec. 5): the stable rank ‖V‖_F²/‖V‖₂² of one matrix (default the first
    counted one: ``V`` of ``twolayer-H``), the train loss (MSE for the ``mse_*`` losses) and the
    generalization gap test − train loss, all at the end of training, against λ (weight decay).
    CHEN: with large λ the stable rank is near 1 and the gap is smallest. One line per ``vary``;
    seed replicates: their mean, with a min–max band.
    """
    res = as_results(results)
    sel = select(res, where, runs, x="optimizer.weight_decay", vary=vary)
    decays = sel.values("x")
    if len(decays) < 2:
        raise PlotError("this figure needs runs at two or more values of optimizer.weight_decay")
    name = layer or counted_layers(sel, "counted")[0]
    counted_layers(sel, [name])
    layers = at_epoch(sel.results.layers, epoch)
    stable = layers[layers["layer"] == name].set_index("run_id")["stable_rank"]
    scalars = at_epoch(sel.results.scalars, epoch).set_index("run_id")
    mse = str(sel.runs["loss"].iloc[0]).startswith("mse")
    loss = "MSE" if mse else "loss"
    panels = [
        (f"stable rank of {name}", stable),
        (f"train {loss}", scalars["train_loss"]),
        (f"test − train {loss}", scalars["test_loss"] - scalars["train_loss"]),
    ]
    fig = new_figure(3, 1, (2.8, 2.5))
    axes = fig.subplots(1, 3, squeeze=False)[0]
    key = sel.keys["x"]
    for ax, (ylabel, column) in zip(axes, panels):
        for vval, members in sel.groups("vary"):
            per_decay = {x: column.reindex(ids).reset_index(drop=True) for _, x, ids in sel.replicates(members, "x")}
            table = pd.DataFrame(per_decay).T  # λ × replicate
            mean_band(ax, table, label=sel.label("vary", vval) or "runs", **sel.style("vary", vval))
        positive = [d for d in decays if d > 0]
        if 0 in decays or 0.0 in decays:
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        else:
            ax.set_xscale("log")
        ax.set_xlabel(symbol(key))
        ax.set_ylabel(ylabel)
    legend(fig, sel, "vary")
    return fig
