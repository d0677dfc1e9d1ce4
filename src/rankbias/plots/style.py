"""One look for every figure family: palette, fonts, figure construction, saving.

Colours are the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), distinguishable
under the common colour-vision deficiencies; past eight lines, evenly spaced samples of
``cividis`` (designed for the same purpose). Every line also gets its own marker, so a figure
printed in grey still separates its lines. Images and heatmaps use ``cividis``.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: no
global figure registry, no backend switch, nothing left open. Style settings apply only inside
:func:`styled` (a ``matplotlib.rc_context``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..errors import ConfigError
from ..store.io import check_output, replace_from, writing

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
CMAP = "cividis"
BAND_ALPHA = 0.2  # the min–max band over seed replicates, in its line's colour
# a run that diverged or did not learn: an × on its last record (the theory checks leave it out)
LEFT_OUT = {"marker": "x", "markersize": 8, "markeredgewidth": 1.8, "color": "#000000", "linestyle": "none"}

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.formatter.useoffset": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "image.cmap": CMAP,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF (journals ask for it)
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}


def styled(function):
    """Run a figure function inside the package's ``rc_context``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper


def colors(n: int) -> list:
    """``n`` distinguishable colours: Okabe–Ito up to 8, else samples of cividis."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    cmap = matplotlib.colormaps[CMAP]
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def line_style(i: int, n: int, points: int = 0) -> dict:
    """Colour and marker of the ``i``-th of ``n`` lines; about ten markers per line of ``points``."""
    return {"color": colors(n)[i], "marker": MARKERS[i % len(MARKERS)], "markevery": max(1, points // 10)}


def mean_band(ax, table, **style):
    """Draw the mean of ``table``'s columns (one per replicate; NaN skipped) against its index and,
    with two or more columns, their min–max as a band in the line's colour. Returns the line."""
    x = table.index.to_numpy()
    (line,) = ax.plot(x, table.mean(axis=1).to_numpy(), **style)
    if table.shape[1] > 1:
        low, high = table.min(axis=1).to_numpy(), table.max(axis=1).to_numpy()
        ax.fill_between(x, low, high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
    return line


def new_figure(ncols: int = 1, nrows: int = 1, panel_size: tuple[float, float] = (3.2, 2.4)) -> Figure:
    """A constrained-layout figure sized for ``nrows × ncols`` panels of ``panel_size`` inches."""
    width = min(panel_size[0] * ncols + 1.2, 16)
    return Figure(figsize=(width, panel_size[1] * nrows + 0.4), layout="constrained")


def full_rank(selection) -> float | None:
    """The full rank of a selection's average rank: the largest, over its runs, of the mean smaller
    dimension of the counted matrices (None without layer records)."""
    layers = selection.results.layers
    counted = layers[layers["counted"]].drop_duplicates(["run_id", "layer"])
    full = (counted["rows"].clip(upper=counted["cols"])).groupby(counted["run_id"]).mean()
    return float(full.max()) if len(full) else None


MIN_RANK_SPAN = 0.1  # a rank axis spans at least this share of the full rank


def rank_axis(ax, selection) -> None:
    """Widen ``ax``'s rank axis to at least :data:`MIN_RANK_SPAN` of the full rank, around the data
    and within [0, full rank]: a change of a fraction of one rank must not fill the panel and read
    as an effect (a run whose average rank moves from 21 to 20.86)."""
    full = full_rank(selection)
    low, high = ax.get_ylim()
    if full is None or high - low >= MIN_RANK_SPAN * full:
        return
    span = MIN_RANK_SPAN * full
    low = min(max(0.0, (low + high - span) / 2), max(0.0, full * 1.02 - span))
    ax.set_ylim(low, low + span)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels."""
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` (format from the suffix: .pdf vector, .png, .svg), without software metadata.

    The file is whole or not at all (written beside ``path``, then renamed); a full or read-only
    disk raises one :class:`~rankbias.errors.StoreError` and leaves an earlier file as it was.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:  # as matplotlib does: the default format, appended to the name
        suffix = "." + matplotlib.rcParams["savefig.format"]
        path = path.with_name(path.name + suffix)
    if suffix[1:] not in figure.canvas.get_supported_filetypes():
        raise ConfigError("path", f"{path}: matplotlib cannot write {suffix} files (use .pdf, .png or .svg)")
    check_output(path, "path")
    metadata = {"Software": None} if suffix == ".png" else {"Creator": None} if suffix in (".pdf", ".svg") else None
    with writing(path.absolute().parent), matplotlib.rc_context(STYLE):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name ends in .tmp: the format is given, not guessed from it
        replace_from(lambda tmp: figure.savefig(tmp, format=suffix[1:], metadata=metadata), path)
    return path


# -- legends and titles of a figure's selection (plots.select.Selection) ---------------------------
def legend(fig: Figure, selection, role: str, extra: list | None = None) -> None:
    """One figure legend: a line per value of ``role`` (plus ``extra`` handles), right of the panels."""
    handles = []
    if selection.keys.get(role) is not None:
        for v in selection.values(role):
            style = {k: s for k, s in selection.style(role, v).items() if k != "markevery"}
            handles.append(Line2D([], [], label=selection.label(role, v), **style))
    left_out = selection.left_out()
    if left_out:
        reasons = " or ".join(sorted(set(left_out.values())))
        handles.append(Line2D([], [], **LEFT_OUT, label=f"{reasons}: its last record"))
    figure_legend(fig, selection, handles + (extra or []))


def figure_legend(fig: Figure, selection, handles: list, title: str = "") -> None:
    """``handles`` right of the panels, under ``title`` and, when lines average seed replicates, a
    note that says so ("mean of 3 seeds, band: min–max")."""
    title = "\n".join(t for t in (title, selection.replicate_note()) if t)
    if handles or title:
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title=title or None)


def line_name(selection, value, run_ids: list[str]) -> str:
    """A line's label: its ``vary`` value, else its run (or how many runs it averages); a line with a
    run that diverged or did not learn says so."""
    name = selection.label("vary", value) or (run_ids[0] if len(run_ids) == 1 else f"mean of {len(run_ids)} runs")
    reasons = sorted({selection.left_out()[r] for r in run_ids if r in selection.left_out()})
    return name + (f" ({', '.join(reasons)})" if reasons else "")


def mark_left_out(ax, selection, table) -> None:
    """An × at the last finite value of each column of ``table`` (one per run, indexed by epoch ...)
    whose run diverged or did not learn (:meth:`Selection.left_out`: the runs the checks leave out)."""
    for run_id in table.columns:
        if run_id in selection.left_out():
            column = table[run_id].dropna()
            if len(column):
                ax.plot([column.index[-1]], [column.iloc[-1]], **LEFT_OUT)


def panel_title(ax, selection, value) -> None:
    if selection.keys.get("panel") is not None:
        ax.set_title(selection.label("panel", value))
