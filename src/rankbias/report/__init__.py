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

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..plots.style import save
from ..store.catalog import run_dirs
from ..store.io import replace_from, writing
from ..store.records import Results, load, subset
from .choose import Chosen, choose_figures
from .compression_section import compression_section
from .page import configuration, figure_html, intro, page, png_base64, problems, provenance, run_table
from .theory_section import theory_section


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
    render = partial(_render, figures_dir=figures_dir)
    blocks = [
        render(c.name, c.title, c.caption, partial(c.draw, drawable, eps, norm)) for c in choose_figures(drawable)
    ]
    if skipped:
        blocks.insert(0, f'<p class="note">Not drawn (fewer than two records; see above): {", ".join(skipped)}.</p>')
    sections = [
        ("configuration", "Configuration", configuration(records)),
        ("runs", "Final records per run", '<p class="note">Click a column to sort.</p>' + run_table(records)),
        ("problems", "Diverged, failed and damaged runs", problems(records)),
        ("figures", "Figures", "\n".join(blocks) or "<p>No run has records yet.</p>"),
        ("theory", "Theory checks", theory_section(drawable, render) if len(skipped) < len(records.runs) else None),
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


def _render(name: str, title: str, caption: str, draw: Callable[[], Figure], figures_dir: Path | None) -> str:
    """One figure's HTML (and ``figures_dir/NAME.png``, ``.pdf``); a figure that cannot be drawn
    says why and the report goes on."""
    try:
        figure = draw()
    except Exception as exc:  # noqa: BLE001  one bad figure must not cost the whole report
        return figure_html(name, title, caption, None, f"{type(exc).__name__}: {exc}")
    if figures_dir is not None:
        for suffix in (".png", ".pdf"):
            save(figure, figures_dir / f"{name}{suffix}")
    return figure_html(name, title, caption, png_base64(figure))


__all__ = ["Chosen", "choose_figures", "write_report"]
