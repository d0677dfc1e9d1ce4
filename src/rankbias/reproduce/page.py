"""Every reproduction under a results folder as one self-contained HTML page and a CSV.

Read from what :func:`~rankbias.reproduce.run.reproduce` wrote (``<id>/<scale>/claim.json``,
``claim.csv``, ``figure*.png``), so nothing is retrained and presets reproduced by earlier
commands are included: a summary table (preset, paper figure, claim, verdict, share of agreeing
rows, runs), then per preset its figures, its claim table and the readings it takes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from ..report.page import figure_html, page, table_html
from . import catalog


def collect(results: str | Path, scale: str) -> pd.DataFrame:
    """One row per preset reproduced under ``results`` at ``scale`` (catalog order)."""
    rows = []
    for preset in catalog.PRESETS.values():
        path = Path(results) / preset.id / scale / "claim.json"
        if path.exists():
            summary = json.loads(path.read_text())
            rows.append({"preset": preset.id, "figure": preset.paper, "model": preset.model, "claim": summary["claim"],
                         "verdict": summary["verdict"], "share": summary["share"], "runs": summary["runs"]})  # fmt: skip
    columns = ["preset", "figure", "model", "claim", "verdict", "share", "runs"]
    return pd.DataFrame(rows, columns=columns)


def write(results: str | Path, scale: str) -> Path | None:
    """Write ``results/reproduce-<scale>.html`` and ``.csv``; returns the page's path (None when
    nothing was reproduced at ``scale``)."""
    results = Path(results)
    table = collect(results, scale)
    if table.empty:
        return None
    table.to_csv(results / f"reproduce-{scale}.csv", index=False)
    counts = ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts().items())
    intro = (f"<p>{len(table)} of {len(catalog.PRESETS)} presets reproduced at the {html.escape(scale)} scale: "
             f"{html.escape(counts)}. A claim holds when at least its share of rows agree (docs/reproduce.md).</p>")
    sections = [("summary", "Summary", table_html(table, sortable=True, row_classes=_classes(table)))]
    sections += [(row.preset, f"{row.preset}: {row.figure}", _section(results / row.preset / scale, row)) for row in table.itertuples()]
    path = results / f"reproduce-{scale}.html"
    path.write_text(page(f"reproductions ({scale})", intro, sections))
    return path


def _classes(table: pd.DataFrame) -> list[str]:
    return ["" if v == "holds" else "failed" if v == "fails" else "diverged" for v in table["verdict"]]


def _section(out: Path, row) -> str:
    preset = catalog.get(row.preset)
    share = "" if row.share is None or row.share != row.share else f" ({row.share:.0%} of rows agree)"
    about = f"{preset.claim.check}; {row.runs} runs; varies: {preset.varies}"
    parts = [f"<p><b>{html.escape(str(row.verdict))}</b>{html.escape(share)}: {html.escape(row.claim)} ({html.escape(about)})</p>"]
    for png in sorted(out.glob("figure*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(figure_html(f"{row.preset}-{png.stem}", f"{row.figure}, {png.stem}", html.escape(preset.varies), data))
    claim = out / "claim.csv"
    if claim.exists() and claim.stat().st_size > 0:
        frame = pd.read_csv(claim)
        if len(frame.columns):
            parts.append("<h3>Claim table</h3>" + table_html(frame, sortable=True))
    readings = pd.DataFrame({"question": list(preset.readings), "reading taken": list(preset.readings.values())})
    parts.append(f"<details><summary>Readings ({len(readings)})</summary>{table_html(readings)}</details>")
    return "\n".join(parts)
