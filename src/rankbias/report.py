"""A self-contained HTML page of a results directory: the final summary and ranks per epoch.

Tables only; every number is read from the stored records (``rb.load``).
"""

from __future__ import annotations

import html
from pathlib import Path

from .api import load
from .summary import final_summary, varied_keys

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>rankbias: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>rankbias: {title}</h1>
<p>{runs} run(s). Ranks: ε = {eps}, the runs' own normalization; average over the counted matrices.</p>
<h2>Final records</h2>
{summary}
<h2>Average rank per recorded epoch</h2>
{ranks}
<h2>Test accuracy per recorded epoch</h2>
{accuracy}
</body></html>
"""


def write_report(results: str | Path, out: str | Path | None = None, eps: float | None = None) -> Path:
    """Write ``report.html`` (default: inside ``results``) and return its path."""
    results = Path(results)
    records = load(results, eps=eps)
    summary = final_summary(records)
    keys = varied_keys(records.runs) or ["run_id"]
    label = records.runs.set_index("run_id")[keys].astype(str).agg(", ".join, axis=1) if keys != ["run_id"] else None

    def per_epoch(column: str) -> str:
        table = records.scalars.pivot(index="epoch", columns="run_id", values=column)
        if label is not None:
            table.columns = [f"{', '.join(keys)} = {label[c]}" for c in table.columns]
        return table.to_html(float_format=lambda v: f"{v:.4g}")

    out = Path(out) if out else results / "report.html"
    eps_text = eps if eps is not None else ", ".join(map(str, sorted(records.runs["record.eps"].unique())))
    out.write_text(
        PAGE.format(
            title=html.escape(str(results)),
            runs=len(records.runs),
            eps=eps_text,
            summary=summary.to_html(index=False, float_format=lambda v: f"{v:.4g}"),
            ranks=per_epoch("avg_rank"),
            accuracy=per_epoch("test_acc"),
        )
    )
    return out
