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
from ..plots.select import label, order_values, ordered_keys, same_value
from ..plots.style import MARKERS, line_style, new_figure, styled


def setting_keys(table: pd.DataFrame) -> list[str]:
    """The config keys in a compression table (the settings that differ between its runs), in
    the order of every figure: B, μ, λ, then the rest."""
    return ordered_keys([c for c in table.columns if "." in c])


@styled
def compression_figure(table: pd.DataFrame, by: str | None = None, runs: pd.DataFrame | None = None) -> Figure:
    """Test accuracy after compression against the number of parameters, one curve per run
    (labelled by the settings that differ) or, with ``by`` (a config key such as
    ``train.batch_size``), one curve per value of it: the mean over its runs at each ε. Each point
    is labelled with its ε (points of equal size and accuracy share one label, "1e-4–0.01").
    Runs without classes (regression: no accuracy) are drawn by their test loss. The x-axis is
    logarithmic when the sizes span more than a factor 10, and always spans every point.

    ``table``: the summary of :func:`rankbias.compress.compress_run` or
    :func:`rankbias.compress.read_compressed` (columns run_id, eps, params_before, params_after,
    test_acc_before, test_acc_after, and the varied config keys). ``runs``: the runs table of a
    page (``rb.load(...).runs``): a curve then takes the colour its setting has in the page's
    other figures (the place of its value among these runs' values).
    """
    if table.empty:
        raise PlotError("the compression table is empty: nothing to plot")
    if by is not None and by not in table.columns:
        keys = ", ".join(setting_keys(table)) or "none (a single run)"
        raise PlotError(f"{by!r} is not a setting that differs between these runs; these do: {keys}")
    metric = "test_acc" if table["test_acc_after"].notna().any() else "test_loss"
    columns = ["params_before", "params_after", f"{metric}_before", f"{metric}_after"]
    keys = setting_keys(table)
    key = by or (keys[0] if keys else None)
    if by is None:
        groups = [(_label(rows, keys), rows) for _, rows in table.groupby("run_id", sort=False)]
    else:
        groups = [(label(by, value), rows) for value, rows in table.groupby(by, sort=False)]
    if key is not None:  # in the order of the setting's values (8 before 32), as every figure
        position = lambda rows: _position(order_values(table[key]), rows[key].iloc[0])
        groups.sort(key=lambda item: (position(item[1]), item[0]))
    figure = new_figure(panel_size=(4.2, 3.0))
    ax = figure.add_subplot()
    for i, (name, rows) in enumerate(groups):
        curve = rows.groupby("eps")[columns].mean().sort_index()
        style = _style(i, len(groups), key, rows, runs)
        ax.plot(curve["params_after"], curve[f"{metric}_after"], label=name, **style)
        ax.plot(curve["params_before"].iloc[0], curve[f"{metric}_before"].iloc[0], linestyle="none",
                marker=style["marker"], markerfacecolor="none", markeredgecolor=style["color"], markersize=7)
        _label_eps(ax, curve, metric, style["color"], below=i % 2 == 1)
    sizes = pd.concat([table["params_after"], table["params_before"]]).astype(float)
    low, high = float(sizes.min()), float(sizes.max())
    if high > 10 * low:
        ax.set_xscale("log")
        ax.set_xlim(low / 1.15, high * 1.15)
    else:
        pad = 0.06 * (high - low) if high > low else 0.05 * high
        ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel("parameters after compression")
    ax.set_ylabel("test accuracy" if metric == "test_acc" else "test loss")
    norms = ", ".join(sorted(table["norm"].astype(str).unique()))
    ax.set_title(f"each point one ε ({norms} norm), labelled; hollow: uncompressed")
    if len(groups) > 1 or by is not None:
        ax.legend(loc="best")
    return figure


def _style(i: int, n: int, key: str | None, rows: pd.DataFrame, runs: pd.DataFrame | None) -> dict:
    """The curve's colour: its setting's place among the page's values (``runs``), else its own place."""
    if key is None or runs is None or key not in runs:
        return line_style(i, n)
    values = order_values(runs[key])
    return line_style(_position(values, rows[key].iloc[0]), len(values)) | {"marker": MARKERS[i % len(MARKERS)]}


def _position(values: list, value) -> int:
    return next((k for k, v in enumerate(values) if same_value(v, value)), 0)


def _label_eps(ax, curve: pd.DataFrame, metric: str, color, below: bool) -> None:
    """Write ε beside each point of ``curve``, above and below in turn (``below``: the first below),
    so neighbours do not overlap; points at the same place share one label (low–high)."""
    places = {}
    for eps, row in curve.iterrows():
        places.setdefault((row["params_after"], row[f"{metric}_after"]), []).append(eps)
    short = lambda eps: f"{eps:.0e}".replace("e-0", "e-").replace("e+00", "")
    for k, ((x, y), eps) in enumerate(places.items()):
        text = short(eps[0]) if len(eps) == 1 else f"{short(min(eps))}–{short(max(eps))}"
        under = below != (k % 2 == 1)
        ax.annotate(text, (x, y), xytext=(2, -9 if under else 4), textcoords="offset points", fontsize=6.5,
                    color=color)


def _label(rows: pd.DataFrame, keys: list[str]) -> str:
    first = rows.iloc[0]
    return ", ".join(label(k, first[k]) for k in keys) if keys else str(first["run_id"])
