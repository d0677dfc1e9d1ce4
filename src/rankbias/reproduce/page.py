"""Every reproduction under a results folder as one self-contained HTML page and a CSV.

Read from what :func:`~rankbias.reproduce.run.reproduce` wrote (``<id>/<scale>/claim.json``,
``claim.csv``, ``figure*.png``), so nothing is retrained and presets reproduced by earlier
commands are included: a summary table (preset, paper figure, claim, verdict, effect ± interval,
p, the λ = 0 control, seeds, runs, why; rows coloured by verdict), then per preset its figures, its
claim table and the readings it takes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from ..conventions import symbol
from ..plots import FIGURES
from ..report.page import figure_html, page, table_html
from . import catalog
from .run import configs, trained_setup


def collect(results: str | Path, scale: str) -> pd.DataFrame:
    """One row per preset reproduced under ``results`` at ``scale`` (catalog order): its verdict,
    the effect ± interval, p, the λ = 0 control's effect, the seeds, and why."""
    rows = []
    for preset in catalog.PRESETS.values():
        path = Path(results) / preset.id / scale / "claim.json"
        if path.exists():
            summary = json.loads(path.read_text())
            rows.append(
                {
                    "preset": preset.id,
                    "figure": preset.paper,
                    "model": _trained(preset, scale, summary),
                    "claim": summary["claim"],
                    "verdict": summary["verdict"],
                    "effect": _interval(summary, "effect", "ci_low", "ci_high"),
                    "p": summary.get("p"),
                    "control": _interval(summary, "control_effect", "control_ci_low", "control_ci_high"),
                    "seeds": " ".join(str(s) for s in summary.get("seeds", [])),
                    "runs": summary["runs"],
                    "why": summary.get("why", ""),
                }
            )
    columns = ["preset", "figure", "model", "claim", "verdict", "effect", "p", "control", "seeds", "runs", "why"]
    return pd.DataFrame(rows, columns=columns)


def _trained(preset: catalog.Preset, scale: str, summary: dict) -> str:
    """The model and data that trained at ``scale``: as ``claim.json`` records them, else (files
    written before it did) the preset's configs at that scale."""
    if summary.get("model"):
        return f"{summary['model']} on {summary['data']}"
    model, data = trained_setup(configs(preset.id, scale, seeds=1))
    return f"{model} on {data}"


def _interval(summary: dict, value: str, low: str, high: str) -> str:
    """``effect [low, high]`` in % of the full rank, or empty."""
    if summary.get(value) is None:
        return ""
    bounds = "" if summary.get(low) is None else f" [{summary[low]:.1f}, {summary[high]:.1f}]"
    return f"{summary[value]:.1f}{bounds}"


def write(results: str | Path, scale: str) -> Path | None:
    """Write ``results/reproduce-<scale>.html`` and ``.csv``; returns the page's path (None when
    nothing was reproduced at ``scale``)."""
    results = Path(results)
    table = collect(results, scale)
    if table.empty:
        return None
    table.to_csv(results / f"reproduce-{scale}.csv", index=False)
    counts = ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts().items())
    intro = (
        f"<p>{len(table)} of {len(catalog.PRESETS)} presets reproduced at the {html.escape(scale)} scale: "
        f"{html.escape(counts)}. Effects are in % of the full rank, mean over seeds with a bootstrap 95 % interval; "
        "p is a one-sided permutation p-value; the control is the same effect in the runs without weight decay "
        "(docs/reproduce.md, \"The tests\").</p>"
    )
    sections = [("summary", "Summary", table_html(table, sortable=True, row_classes=_classes(table)))]
    sections += [
        (row.preset, f"{row.preset}: {row.figure}", _section(results / row.preset / scale, row))
        for row in table.itertuples()
    ]
    path = results / f"reproduce-{scale}.html"
    path.write_text(page(f"reproductions ({scale})", intro, sections))
    return path


VERDICT_CLASSES = {
    "holds": "v-holds",
    "fails": "v-fails",
    "inconclusive": "v-inconclusive",
    "holds without weight decay": "v-without",
    "uninformative": "v-uninformative",
    "not applicable": "v-na",
    "not enough runs": "v-notenough",
}


def _classes(table: pd.DataFrame) -> list[str]:
    return [VERDICT_CLASSES.get(v, "") for v in table["verdict"]]


def _caption(preset, figures: int) -> str:
    """What a preset's figure draws and what the reader should see (HTML)."""
    roles = {"vary": "lines", "panel": "panels", "x": "x", "y": "y"}
    bound = ", ".join(f"{roles.get(r, r)}: {symbol(k)}" for r, k in preset.roles.items() if k)
    apart = (" One figure per value of the settings no role covers (its title says which); each figure has its "
             "own y-axis, so compare their numbers, not their heights." if figures > 1 else "")
    return html.escape(
        f"{FIGURES[preset.family].help[:1].upper()}{FIGURES[preset.family].help[1:]} ({preset.family}"
        f"{'; ' + bound if bound else ''}). What to see: {preset.claim.statement}.{apart} × marks the last record of "
        "a run that diverged or did not learn."
    )


def _section(out: Path, row) -> str:
    preset = catalog.get(row.preset)
    about = f"{preset.claim.check}; {row.runs} runs; seeds {row.seeds}; varies: {preset.varies}"
    verdict = f'<b class="{VERDICT_CLASSES.get(row.verdict, "")}">{html.escape(str(row.verdict))}</b>'
    why = f'<p class="note">{html.escape(str(row.why))}</p>'
    parts = [f"<p>{verdict}: {html.escape(row.claim)} ({html.escape(about)})</p>{why}"]
    summary = json.loads((out / "claim.json").read_text())
    left_out = summary.get("not_learned") or []
    if left_out:
        parts.append(f'<p class="note">Left out of the check (did not learn: the last train accuracy is not above '
                     f"twice the first), marked × in the figures: {html.escape(', '.join(left_out))}.</p>")
    if summary.get("tests"):
        tests = pd.DataFrame(summary["tests"]).drop(columns=["seeds"], errors="ignore")
        # one column per test, one row per number: any number of fields fits the page's width
        names = [f"{t.get('test', 'test')} {i + 1}" for i, t in enumerate(summary["tests"])]
        parts.append("<h3>Tests</h3>" + table_html(tests.T.set_axis(names, axis=1).rename_axis("field").reset_index()))
    pngs = sorted(out.glob("figure*.png"))
    for k, png in enumerate(pngs):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        title = f"{row.figure}" + (f", figure {k + 1} of {len(pngs)}" if len(pngs) > 1 else "")
        parts.append(figure_html(f"{row.preset}-{png.stem}", title, _caption(preset, len(pngs)), data))
    claim = out / "claim.csv"
    if claim.exists() and claim.stat().st_size > 1:  # a table without columns is written as one newline
        frame = pd.read_csv(claim)
        if len(frame.columns):
            parts.append("<h3>Claim table</h3>" + table_html(frame, sortable=True))
    readings = pd.DataFrame({"question": list(preset.readings), "reading taken": list(preset.readings.values())})
    parts.append(f"<details><summary>Readings ({len(readings)})</summary>{table_html(readings)}</details>")
    return "\n".join(parts)
