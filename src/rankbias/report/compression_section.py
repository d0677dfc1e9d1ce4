"""The report's "Compression" section: what the stored compression results say.

Shown only when runs were compressed (``rankbias compress``, :func:`rankbias.compress_run`
stores ``<run>/compress/*.parquet``); read with :func:`rankbias.read_compressed`. The figure is
:func:`rankbias.compress.figure.compression_figure` (test accuracy against parameter count over ε,
one per normalization), the table :func:`rankbias.compress.smallest` (per run, the smallest
network within :data:`MAX_DROP` of its uncompressed test accuracy). See docs/compress.md.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..compress import read_compressed, smallest
from ..compress.figure import compression_figure, setting_keys
from ..conventions import symbol
from ..plots.select import fmt
from .page import table_html

MAX_DROP = 0.01  # the accuracy a smaller network may lose and still count as "equal accuracy"
MAX_CURVES = 8  # past this many runs, one curve per value of the first varied setting


def compression_section(
    results: str | Path, runs: pd.DataFrame, render: Callable[[str, str, str, Callable[[], Figure]], str]
) -> str | None:
    """The section's HTML, or ``None`` when no run under ``results`` has compression results.

    ``runs``: ``rb.load(results).runs``; only runs whose state is ``done`` are shown (a diverged
    run's checkpoint is its last finite state: its accuracy says nothing about compression).
    """
    summary, _ = read_compressed(results)
    if summary.empty:
        return None
    done = set(runs.loc[runs["state"] == "done", "run_id"])
    left_out = sorted(set(summary["run_id"]) - done)
    summary = summary[summary["run_id"].isin(done)]
    note = f" Left out (not done): {html.escape(', '.join(left_out))}." if left_out else ""
    parts = [
        (
            f'<p class="note">{summary["run_id"].nunique()} run(s) compressed at their ε-ranks from their last '
            "checkpoint, no retraining (<code>rankbias compress</code>; docs/compress.md). Each weight matrix is "
            "replaced by its truncated SVD at its ε-rank where that is smaller; the ε here are those of the "
            f"compression, independent of the ranks above.{note}</p>"
        )
    ]
    if summary.empty:
        return "\n".join(parts)
    constant = [k for k in setting_keys(summary) if summary[k].astype(str).nunique() < 2]  # after leaving runs out
    summary = summary.drop(columns=constant)
    keys = setting_keys(summary)
    by = keys[0] if keys and summary["run_id"].nunique() > MAX_CURVES else None
    for norm, rows in summary.groupby("norm", sort=True):
        curves = f"one curve per value of {symbol(by)}, the mean over its runs" if by else "one curve per run"
        caption = (
            "Test accuracy after compression against the number of parameters, one point per ε (labelled with it; "
            f"{html.escape(str(norm))} norm), {html.escape(curves)}, in the colours of the figures above; the hollow "
            "marker is the uncompressed network. What to see: the papers predict that small B with weight decay keeps "
            "its accuracy down to the smallest size (its curve stays flat further to the left)."
        )
        parts.append(
            render(
                f"compression_{norm}",
                f"Compression: accuracy against size ({norm} norm)",
                caption,
                lambda rows=rows: compression_figure(rows, by, runs=runs),
            )
        )
    parts.append(
        '<h3>Smallest network at equal accuracy</h3><p class="note">Per run and normalization, the most compressed '
        f"ε whose test accuracy is within {MAX_DROP:g} of the uncompressed network's (test loss within "
        f"{MAX_DROP:.0%} for regression), smallest first (<code>rankbias.compress.smallest</code>).</p>"
    )
    best = pd.concat([smallest(rows, MAX_DROP) for _, rows in summary.groupby("norm", sort=True)], ignore_index=True)
    parts.append(
        table_html(_smallest_table(best, keys), sortable=True)
        if len(best)
        else "<p>No ε keeps the accuracy of any run.</p>"
    )
    return "\n".join(parts)


def _smallest_table(best: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    scores = (
        ["test_acc_before", "test_acc_after"]
        if best["test_acc_before"].notna().all()
        else ["test_loss_before", "test_loss_after"]
    )
    norm = ["norm"] if best["norm"].nunique() > 1 else []
    table = best[["run_id", *keys, "eps", *norm, "params_before", "params_after", *scores]].copy()
    kept = (best["params_after"] / best["params_before"]).map(lambda v: f"{v:.1%}")
    table.insert(table.columns.get_loc("params_after") + 1, "kept", kept)
    table["eps"] = table["eps"].map(fmt)
    table = table.dropna(axis=1, how="all")
    return table.rename(columns={k: symbol(k) for k in keys}).astype(object)
