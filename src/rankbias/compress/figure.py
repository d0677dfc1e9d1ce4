"""The figure of compression: test accuracy (test loss for regression) against parameter count over ε.

Each point is one ε of :func:`rankbias.compress.runs.compress_run` (a larger ε gives fewer
parameters); the hollow marker at the right end of a curve is the uncompressed network. The
papers' prediction (GSGP Sec. 4.1, GP Sec. 5) is that small batches with weight decay reach the
smallest size at equal accuracy: their curves stay flat further to the left.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ..errors import PlotError
from ..plots.select import label, ordered_keys
from ..plots.style import line_style, new_figure, styled


def setting_keys(table: pd.DataFrame) -> list[str]:
    """The config keys in a compression table (the settings that differ between its runs), in
    the order of every figure: B, μ, λ, then the rest."""
    return ordered_keys([c for c in table.columns if "." in c])


@styled
def compression_figure(table: pd.DataFrame, by: str | None = None) -> Figure:
    """Test accuracy after compression against the number of parameters, one curve per run
    (labelled by the settings that differ) or, with ``by`` (a config key such as
    ``train.batch_size``), one curve per value of it: the mean over its runs at each ε.
    Runs without classes (regression: no accuracy) are drawn by their test loss.

    ``table``: the summary of :func:`rankbias.compress.compress_run` or
    :func:`rankbias.compress.read_compressed` (columns run_id, eps, params_before, params_after,
    test_acc_before, test_acc_after, and the varied config keys).
    """
    if table.empty:
        raise PlotError("the compression table is empty: nothing to plot")
    if by is not None and by not in table.columns:
        keys = ", ".join(setting_keys(table)) or "none (a single run)"
        raise PlotError(f"{by!r} is not a setting that differs between these runs; these do: {keys}")
    metric = "test_acc" if table["test_acc_after"].notna().any() else "test_loss"
    columns = ["params_before", "params_after", f"{metric}_before", f"{metric}_after"]
    if by is None:
        keys = setting_keys(table)
        groups = [(_label(rows, keys), rows) for _, rows in table.groupby("run_id", sort=False)]
        groups.sort(key=lambda item: item[0])
    else:
        groups = [(label(by, value), rows) for value, rows in table.groupby(by, sort=True)]
    figure = new_figure(panel_size=(4.2, 3.0))
    ax = figure.add_subplot()
    for i, (name, rows) in enumerate(groups):
        curve = rows.groupby("eps")[columns].mean().sort_index()
        style = line_style(i, len(groups))
        ax.plot(curve["params_after"], curve[f"{metric}_after"], label=name, **style)
        ax.plot(curve["params_before"].iloc[0], curve[f"{metric}_before"].iloc[0], linestyle="none",
                marker=style["marker"], markerfacecolor="none", markeredgecolor=style["color"], markersize=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters after compression")
    ax.set_ylabel("test accuracy" if metric == "test_acc" else "test loss")
    norms = ", ".join(sorted(table["norm"].astype(str).unique()))
    eps = table["eps"]
    ax.set_title(f"ε from {eps.min():.2g} to {eps.max():.2g} ({norms} norm); hollow: uncompressed")
    if len(groups) > 1 or by is not None:
        ax.legend(loc="best")
    return figure


def _label(rows: pd.DataFrame, keys: list[str]) -> str:
    first = rows.iloc[0]
    return ", ".join(label(k, first[k]) for k in keys) if keys else str(first["run_id"])
