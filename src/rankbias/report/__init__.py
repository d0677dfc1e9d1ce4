"""The HTML report of a results directory: configuration, run table, problems, figures, theory
checks, compression, provenance.

``write_report(results)`` writes one self-contained ``report.html`` (figures inlined as base64
PNG, no external URL). The figures are chosen from what varied (:mod:`.choose`); every number
comes from the stored records (``rb.load``, ranks at another ε/normalization recomputed from the
stored singular values). The theory checks (:mod:`.theory_section`) read the records only; the
compression section (:mod:`.compression_section`) appears when runs were compressed. See
docs/report.md.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..plots import rank_vs_epoch
from ..plots.select import left_out
from ..plots.style import save
from ..store.catalog import run_dirs
from ..store.io import replace_from, writing
from ..store.records import Results, load, subset
from .choose import ABOUT, Chosen, choose_figures, group_runs, with_records
from .compression_section import compression_section
from .page import configuration, figure_html, grouping, intro, page, png_base64, problems, provenance, run_table
from .theory_section import theory_section

MAX_FALLBACK = 8  # runs drawn one by one when no chosen figure could be drawn


def write_report(
    results: str | Path, out: str | Path | None = None, eps: float | None = None, norm: str | None = None
) -> Path:
    """Write the report of ``results`` (a results directory or one run) and return its path.

    ``out``: ``None`` → ``RESULTS/report.html``; a path ending in ``.html`` → that file; any other
    path is a directory: ``OUT/report.html`` plus every figure as ``OUT/figures/NAME.png`` and
    ``.pdf``. ``eps``/``norm``: ranks recomputed from the stored singular values.
    """
    results = Path(results)
    records = load(results, eps=eps, norm=norm)
    if out is None:
        target, figures_dir = results / "report.html", None
    elif Path(out).suffix.lower() in (".html", ".htm"):
        target, figures_dir = Path(out), None
    else:
        target, figures_dir = Path(out) / "report.html", Path(out) / "figures"
    drawable, skipped = _drawable(records)
    numbers, drawn = itertools.count(1), []

    def render(name: str, title: str, caption: str, draw: Callable[[], Figure]) -> str:
        """Every figure of the page numbered in page order: Figure 1, 2, ..."""
        text, ok = _render(name, f"Figure {next(numbers)}. {title}", caption, draw, figures_dir)
        drawn.append(ok)
        return text

    chosen = choose_figures(drawable)
    groups = group_runs(with_records(drawable))
    blocks, group = [grouping(groups, len(with_records(drawable)))] if len(chosen) else [], None
    for c in chosen:
        if c.group is not None and c.group is not group:
            group = c.group
            blocks.append(f'<h3 class="group" id="group-{group.number}">{html.escape(group.title.capitalize())}</h3>')
        blocks.append(render(c.name, c.title, c.caption, partial(c.draw, drawable, eps, norm)))
    if chosen and not any(drawn):  # never a page without a figure when runs have records: one per run
        blocks.append('<p class="note">No chosen figure could be drawn; each run on its own:</p>')
        for run_id in with_records(drawable)["run_id"][:MAX_FALLBACK]:
            draw = partial(rank_vs_epoch, drawable, runs=[run_id], eps=eps, norm=norm)
            title = f"rank-vs-epoch (run {run_id})"
            blocks.append(render(f"rank-vs-epoch_{run_id}", title, ABOUT["rank-vs-epoch"], draw))
    marked = left_out(drawable)
    if marked and chosen:
        named = ", ".join(f"{r} ({why})" for r, why in sorted(marked.items()))
        blocks.insert(0, f'<p class="note">Marked × at their last record in the figures (a diverged run\'s last record '
                      "before it diverged; <em>did not learn</em>: its last train accuracy is not above twice its "
                      f"first, about chance; the reproduce checks leave such runs out): {html.escape(named)}.</p>")
    if skipped:
        blocks.insert(0, f'<p class="note">Not drawn (fewer than two records; see above): {", ".join(skipped)}.</p>')
    sections = [
        ("configuration", "Configuration", configuration(records)),
        ("runs", "Final records per run", '<p class="note">Click a column to sort.</p>' + run_table(records)),
        ("problems", "Diverged, failed and damaged runs", problems(records)),
        ("figures", "Figures", "\n".join(blocks) or "<p>No run has records yet.</p>"),
        (
            "theory",
            "Theory checks",
            theory_section(drawable, render, groups) if len(skipped) < len(records.runs) else None,
        ),
        ("compression", "Compression", compression_section(results, records.runs, render)),
        ("provenance", "Provenance", provenance(run_dirs(results))),
    ]
    sections = [section for section in sections if section[2] is not None]  # a section without data is left out
    text = page(str(results), intro(records, eps, norm), sections)
    with writing(target.parent):  # a full or read-only disk: one StoreError, the old report intact
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_from(lambda tmp: tmp.write_text(text, encoding="utf-8"), target)
    return target


def _drawable(records: Results) -> tuple[Results, list[str]]:
    """The runs with at least two records (a line needs two points), and the ids of the others."""
    counts = records.scalars.groupby("run_id").size() if len(records.scalars) else pd.Series(dtype=int)
    keep = set(counts[counts >= 2].index)
    skipped = sorted(set(records.runs["run_id"]) - keep)
    return (subset(records, keep) if keep else records), skipped


def _render(
    name: str, title: str, caption: str, draw: Callable[[], Figure], figures_dir: Path | None
) -> tuple[str, bool]:
    """One figure's HTML (and ``figures_dir/NAME.png``, ``.pdf``) and whether it was drawn; a figure
    that cannot be drawn says why and the report goes on."""
    try:
        figure = draw()
    except Exception as exc:  # noqa: BLE001  one bad figure must not cost the whole report
        return figure_html(name, title, caption, None, f"{type(exc).__name__}: {exc}"), False
    if figures_dir is not None:
        for suffix in (".png", ".pdf"):
            save(figure, figures_dir / f"{name}{suffix}")
    return figure_html(name, title, caption, png_base64(figure)), True


__all__ = ["Chosen", "choose_figures", "group_runs", "write_report"]
