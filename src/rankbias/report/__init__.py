"""The HTML report of a results directory: configuration, run table, problems, figures, provenance.

``write_report(results)`` writes one self-contained ``report.html`` (figures inlined as base64
PNG, no external URL). The figures are chosen from what varied (:mod:`.choose`); every number
comes from the stored records (``rb.load``, ranks at another ε/normalization recomputed from the
stored singular values). See docs/report.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..api import Results, load
from ..plots.select import subset
from ..plots.style import save
from ..store.catalog import run_dirs
from .choose import Chosen, choose_figures
from .page import configuration, figure_html, intro, page, png_base64, problems, provenance, run_table


def write_report(results: str | Path, out: str | Path | None = None, eps: float | None = None, norm: str | None = None) -> Path:
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
    blocks = [_figure_block(chosen, drawable, figures_dir, eps, norm) for chosen in choose_figures(drawable)]
    if skipped:
        blocks.insert(0, f'<p class="note">Not drawn (fewer than two records; see above): {", ".join(skipped)}.</p>')
    sections = [
        ("configuration", "Configuration", configuration(records)),
        ("runs", "Final records per run", '<p class="note">Click a column to sort.</p>' + run_table(records)),
        ("problems", "Diverged and failed runs", problems(records)),
        ("figures", "Figures", "\n".join(blocks) or "<p>No run has records yet.</p>"),
        ("provenance", "Provenance", provenance(run_dirs(results))),
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page(str(results), intro(records, eps, norm), sections), encoding="utf-8")
    return target


def _drawable(records: Results) -> tuple[Results, list[str]]:
    """The runs with at least two records (a line needs two points), and the ids of the others."""
    counts = records.scalars.groupby("run_id").size() if len(records.scalars) else pd.Series(dtype=int)
    keep = set(counts[counts >= 2].index)
    skipped = sorted(set(records.runs["run_id"]) - keep)
    return (subset(records, keep) if keep else records), skipped


def _figure_block(chosen: Chosen, records: Results, figures_dir: Path | None, eps: float | None, norm: str | None) -> str:
    """One figure's HTML; a figure that cannot be drawn says why and the report goes on."""
    try:
        figure = chosen.draw(records, eps, norm)
    except Exception as exc:  # noqa: BLE001  one bad figure must not cost the whole report
        return figure_html(chosen.name, chosen.title, chosen.caption, None, f"{type(exc).__name__}: {exc}")
    if figures_dir is not None:
        for suffix in (".png", ".pdf"):
            save(figure, figures_dir / f"{chosen.name}{suffix}")
    return figure_html(chosen.name, chosen.title, chosen.caption, png_base64(figure))


__all__ = ["Chosen", "choose_figures", "write_report"]
