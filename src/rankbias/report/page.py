"""The HTML of a report: one self-contained page (inline CSS, inline script, figures as
base64 PNG), no external URL at all, so it opens anywhere without a network."""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..config import flatten
from ..conventions import LAMBDA_NOTE, symbol
from ..plots.select import fmt, order_values
from ..plots.style import STYLE
from ..store.provenance import read as read_provenance
from ..store.records import Results, final_summary, varied_keys

# a backslash at the end of a line joins it to the next (the string has no newline there)
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px; \
padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } \
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.5em 0 0.3em; }
nav a { margin-right: 1em; } .note { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #d5d5d5; padding: 0.25em 0.45em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; } \
td:first-child, th:first-child { text-align: left; font-family: ui-monospace, monospace; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e4e4e4; }
table.sortable th[data-order="asc"]::after { content: " ▲"; } \
table.sortable th[data-order="desc"]::after { content: " ▼"; }
tr.diverged td { background: #fff3e0; } tr.failed td { background: #fde8e8; }
tr.v-holds td { background: #e6f4ea; } tr.v-fails td { background: #fde8e8; } \
tr.v-inconclusive td { background: #fff8e1; }
tr.v-without td { background: #ffe6cc; } tr.v-uninformative td, tr.v-na td, tr.v-notenough td { background: #eceff1; }
h3.group { font-size: 1.2em; margin-top: 2em; }
figure { margin: 0.5em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; }
.wrap { overflow-x: auto; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
      th.dataset.order = ascending ? "asc" : "desc";
      var value = function (row) { var t = row.cells[column].textContent.trim(); \
var n = t === "" ? NaN : Number(t); return isNaN(n) ? t : n; };
      rows.sort(function (a, b) {
        var x = value(a), y = value(b);
        var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
        return ascending ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def png_base64(figure: Figure, dpi: int = 110) -> str:
    """The figure as a base64 PNG (no software metadata)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def table_html(frame: pd.DataFrame, sortable: bool = False, row_classes: list[str] | None = None) -> str:
    """A DataFrame as an HTML table, numbers to 4 significant digits, everything escaped."""
    head = "".join(f"<th>{_breakable(c)}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        rows.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    kind = ' class="sortable"' if sortable else ""
    return f'<div class="wrap"><table{kind}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _breakable(text) -> str:
    """``text`` escaped, with a line break allowed after ``_`` and after a ``.`` before a letter
    (``control_ci_low``, ``train.batch_size``), so a wide table wraps its long names and fits the page."""
    return re.sub(r"(_|\.(?=[A-Za-z]))", r"\1<wbr>", html.escape(str(text)))


def _cell(value) -> str:
    """A table cell: numbers right-aligned, floats to 4 significant digits, text escaped."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "<td></td>"
    if isinstance(value, (float, np.floating)):
        return f"<td>{value:.4g}</td>"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"<td>{value}</td>"
    return f'<td class="text">{_breakable(value)}</td>'


def _header(key: str) -> str:
    return f"{symbol(key)} ({key})" if symbol(key) != key else key


def configuration(results: Results) -> str:
    """What varied (key, symbol, values) and the settings every run shares."""
    runs = results.runs
    keys = [c for c in runs.columns if "." in c or c == "loss"]
    varied = varied_keys(runs)
    parts = []
    if varied:
        table = pd.DataFrame(
            {
                "setting": [_header(k) for k in varied],
                "values": [", ".join(fmt(v) for v in order_values(runs[k])) for k in varied],
            }
        )
        parts.append("<h3>What varied</h3>" + table_html(table))
    else:
        parts.append("<p>Nothing varied: one setting.</p>")
    same = [k for k in keys if k not in varied]
    table = pd.DataFrame({"setting": [_header(k) for k in same], "value": [fmt(runs[k].iloc[0]) for k in same]})
    parts.append(f"<details><summary>Settings every run shares ({len(same)})</summary>{table_html(table)}</details>")
    return "\n".join(parts)


def run_table(results: Results) -> str:
    """One row per run: varied settings, state, last record (sortable by any column)."""
    if results.scalars.empty:  # no run has a record yet
        table = results.runs[["run_id", *varied_keys(results.runs), "state"]]
    else:
        last = results.scalars.sort_values("epoch").groupby("run_id").tail(1)[["run_id", "train_loss", "test_loss"]]
        table = final_summary(results).merge(last, on="run_id", how="left")
        at_end = ["train_acc", "test_acc", "avg_rank"]
        columns = [c for c in table.columns if c not in at_end] + at_end
        table = table[columns].rename(columns={c: symbol(c) for c in table.columns if "." in c})
    classes = [s if s in ("diverged", "failed") else "" for s in table["state"]]
    return table_html(table, sortable=True, row_classes=classes)


def problems(results: Results) -> str:
    """Runs that diverged, failed or have not ended, with their status message; then the damaged
    runs left out of the report, each with its damaged file."""
    runs = results.runs
    bad = runs[runs["state"] != "done"]
    parts = []
    if not bad.empty:
        columns = ["run_id", *varied_keys(runs), "state", "state_epoch", "message"]
        table = bad[columns].rename(columns={"state_epoch": "epoch"})
        table = table.rename(columns={c: symbol(c) for c in table.columns if "." in c})
        parts.append(table_html(table, row_classes=[s if s in ("diverged", "failed") else "" for s in table["state"]]))
    if len(results.damaged):
        note = "<p>Damaged runs, left out of this report (<code>rankbias run</code> retrains them):</p>"
        parts.append(note + table_html(results.damaged, row_classes=["failed"] * len(results.damaged)))
    return "\n".join(parts) or "<p>None: every run is done.</p>"


def provenance(run_dirs: list[Path]) -> str:
    """Each run's ``provenance.json`` (flat JSON): the fields all share once, the rest per run."""
    rows = []
    for run_dir in run_dirs:
        try:
            record = read_provenance(run_dir)
        except (OSError, ValueError) as exc:
            rows.append({"run_id": run_dir.name, "error": f"unreadable provenance.json: {exc}"})
            continue
        if record is not None:
            rows.append({"run_id": run_dir.name, **{k: _when(k, v) for k, v in flatten(record).items()}})
    if not rows:
        return "<p>No run has a provenance.json.</p>"
    table = pd.DataFrame(rows).astype(object)
    columns = [c for c in table.columns if c != "run_id"]
    same = [c for c in columns if table[c].astype(str).nunique() == 1 and table[c].notna().all()]
    differ = [c for c in columns if c not in same]
    parts = [f"<p>{len(rows)} of {len(run_dirs)} run(s) have a provenance.json.</p>"]
    if same:
        shared = pd.DataFrame({"field": same, "value": [table[c].iloc[0] for c in same]})
        parts.append("<h3>Shared by these runs</h3>" + table_html(shared))
    if differ:
        parts.append("<h3>Per run</h3>" + table_html(table[["run_id", *differ]], sortable=True))
    return "\n".join(parts)


def _when(key: str, value):
    """A ``*_time`` field in seconds since the epoch as UTC date and time; anything else as is."""
    if key.endswith("time") and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e8:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value


def grouping(groups: list, n_runs: int) -> str:
    """How the runs were grouped for the figures (``report.choose.group_runs``): a sentence, and
    with several groups a table (group, model and data, runs, what varies inside, what sets it apart)."""
    if len(groups) == 1:
        varied = ", ".join(symbol(k) for k in groups[0].varied) or "nothing"
        return (f'<p class="note">All {n_runs} run(s) with records are drawn together: they share every setting '
                f"but {html.escape(varied)} (and the seeds).</p>")
    rule = (f"<p>The {n_runs} runs with records differ in more than the papers' knobs, so they are drawn in "
            f"{len(groups)} groups and no figure mixes two: a group is the runs that share every setting but B, μ, "
            "λ, momentum and the seeds (sets of runs that differ in one other setting only are joined: a sweep over "
            "it). Runs of different models, data sets, schedules or lengths are not compared in one figure.</p>")
    table = pd.DataFrame({
        "group": [g.number for g in groups],
        "model on data": [g.name for g in groups],
        "runs": [len(g.run_ids) for g in groups],
        "varies inside": [", ".join(symbol(k) for k in g.varied) or "one setting" for g in groups],
        "set apart by": [", ".join(f"{symbol(k)} = {fmt(v)}" for k, v in g.apart.items()) for g in groups],
    })  # fmt: skip
    return rule + table_html(table)


def figure_html(anchor: str, title: str, caption: str, data: str | None, error: str | None = None) -> str:
    """A figure with its title and ``caption`` (HTML, already escaped), or why it is missing."""
    if data is None:
        return (
            f'<figure id="{html.escape(anchor)}"><h3>{html.escape(title)}</h3>'
            f'<p class="note">This figure could not be drawn: {html.escape(error or "")}</p></figure>'
        )
    return (
        f'<figure id="{html.escape(anchor)}"><h3>{html.escape(title)}</h3>'
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def page(title: str, summary: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are (anchor, heading, body html)."""
    nav = " ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<h2 id="{a}">{html.escape(h)}</h2>\n{b}' for a, h, b in sections)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>rankbias: {html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n<h1>rankbias: {html.escape(title)}</h1>\n{summary}\n"
        f"<nav>{nav}</nav>\n{body}\n"
        f"<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )


def intro(results: Results, eps: float | None, norm: str | None) -> str:
    runs = results.runs
    states = ", ".join(f"{n} {s}" for s, n in runs["state"].fillna("unknown").value_counts().items())
    eps_text = fmt(eps) if eps is not None else ", ".join(fmt(v) for v in order_values(runs["record.eps"]))
    norm_text = norm or ", ".join(order_values(runs["record.norm"]))
    source = "recomputed from the stored singular values" if eps is not None or norm is not None else "as recorded"
    return (
        f"<p>{len(runs)} run(s): {html.escape(states)}. Ranks: ε = {html.escape(eps_text)}, matrices normalized by "
        f"their {'Frobenius' if norm_text == 'fro' else html.escape(norm_text)} norm, {source}; the average rank is "
        "the mean over the counted matrices (<code>record.layers</code>).</p>\n"
        f'<p class="note">B is the batch size, μ the learning rate, λ the weight decay. {html.escape(LAMBDA_NOTE)}</p>'
    )
