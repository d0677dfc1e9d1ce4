"""The report's "Theory checks" section: the papers' claims checked on the stored records only.

Everything is computed by :mod:`rankbias.theory` (docs/theory.md) from the records the report
already loaded — no network is loaded and no gradient is computed, so the section costs about
as much as reading the records:

- GSGP Theorem 3.3 over :data:`rankbias.theory.THEOREM_3_3_EPS` (and its figure, GSGP Fig. 18),
- GSGP Lemma 3.2 when runs recorded step norms (``record.step_norms``), with its figure,
- GP Propositions 1–2 (SGD noise),
- GSGP Prediction 4.1: a trend test per knob that varies (B, μ, λ), with its λ = 0 control, its
  verdict and its figure

(:func:`rankbias.theory.record_checks`, :func:`rankbias.theory.prediction_4_1`). Each check gets a
table per run (how many of its rows hold, fail, make no prediction, are trivial, and why), its
figure, and all its rows folded; Prediction 4.1 gets its per-knob verdicts, its figure and its
blocks of runs folded. The gradient checks (GSGP Lemma 3.1, GP Lemma 2 and Theorem 1,
CHEN Theorem 2.6) need the network and gradients: ``rankbias theory RUN`` prints them.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import theory
from ..conventions import symbol
from ..plots.select import label, order_values, ordered_keys, same_value
from ..plots.style import line_style
from ..store.records import Results, varied_keys
from ..theory import figures
from ..theory.prediction import ALPHA, FAILS, HOLDS, MIN_EFFECT
from .page import table_html

# check -> (heading, what it claims: trusted HTML)
CHECKS = {
    "gsgp_theorem_3_3": (
        "GSGP Theorem 3.3: rank bound over ε",
        (
            "W<sub>T</sub>/‖W<sub>T</sub>‖ is within ε of a matrix of rank ≤ m<sub>l</sub>·B·log(2/ε)/(2μλ), assuming "
            "‖W<sub>T−1</sub>‖/‖W<sub>T</sub>‖ → 1; measured: the ε-rank of the last record (Frobenius normalization, "
            "as GSGP Fig. 18). Asymptotic and for plain SGD: "
            "a failure at finite T or with momentum is a finding, not a bug."
        ),
    ),
    "gsgp_lemma_3_2": (
        "GSGP Lemma 3.2: distance to low rank after n steps",
        (
            "For plain SGD, the distance of W<sub>T</sub>/‖W<sub>T</sub>‖ to rank ≤ m<sub>l</sub>·B·n is at most "
            "∏(1 − μ<sub>t</sub>·weight_decay)·‖W<sub>T−n</sub>‖/‖W<sub>T</sub>‖, from the recorded step norms. "
            "An identity-based bound: a violation is a bug in the engine or the check."
        ),
    ),
    "gp_sgd_noise": (
        "GP Propositions 1–2: SGD noise",
        (
            "With weight decay, the weights collapse towards zero or d(W<sub>t+1</sub>, W<sub>t</sub>) stays away "
            "from zero (above the same run without weight decay when the sweep has one); runs without weight decay "
            "are the baselines."
        ),
    ),
}
PREDICTION = (
    "GSGP Prediction 4.1: a trend test per knob",
    (
        "The final average rank is lower with smaller B, larger μ or larger λ; without weight decay B and μ change it "
        "little. Per knob that varies, on the finished runs: runs that share every other setting and the seed form a "
        "block; the statistic is the mean over blocks of Kendall's τ between the knob and the final average rank, its "
        "p-value from permutations of the knob within blocks; the <em>effect</em> is the rank at the level predicted "
        "highest minus at the level predicted lowest, in % of the full rank, mean over seeds with a bootstrap 95 % "
        "interval. B and μ are tested on the runs with λ &gt; 0 and compared with the same trend on their λ = 0 twins "
        f"(the <em>control</em>). <em>holds</em>: p ≤ {ALPHA:g}, the whole interval above {MIN_EFFECT:g} % and, for B "
        "and μ, clearly larger than the control's (the per-pair difference); <em>holds without weight decay</em>: the "
        "trend is not clearly larger than without it; <em>inconclusive</em>: not significant, too few seeds, or runs "
        "not at the norm equilibrium; <em>fails</em>: the rank goes significantly the other way, or the whole "
        "interval lies below the minimum effect; <em>not applicable</em>: B or μ without any run with weight decay. "
        "(docs/reproduce.md, &ldquo;The tests&rdquo;.)"
    ),
)
MAX_ROWS = 300  # rows of a check's full table in the page (the CLI prints them all)
WHY_PARTS = 3  # distinct reasons shown per run
RESTATED = ("norm ratio",)  # note parts that restate a column shown on its own


def theory_section(
    records: Results, render: Callable[[str, str, str, Callable[[], Figure]], str], groups: list | None = None
) -> str | None:
    """The section's HTML for ``records`` (runs with at least two records), or ``None`` when no
    run has records to check. ``render(name, title, caption, draw)`` turns a figure into HTML;
    ``groups`` (``report.choose.group_runs``) name the runs and give them the colours of the figures."""
    if records.scalars.empty or records.layers.empty:
        return None
    checks = theory.record_checks(records)
    has_step_norms = len(records.step_norms) > 0
    if not has_step_norms:  # its rows only say "not recorded": the intro says it once
        checks = checks[checks["check"] != "gsgp_lemma_3_2"]
    prediction = theory.prediction_4_1(records)
    labels, styles = _run_labels(records, groups)
    parts = [_intro(has_step_norms), _overview(checks, prediction.tests)]
    for check, (heading, claim) in CHECKS.items():
        rows = checks[checks["check"] == check]
        if rows.empty:
            continue
        parts.append(f'<h3 id="theory-{check}">{html.escape(heading)}</h3><p class="note">{claim}</p>')
        parts.append(_verdict(rows) + _per_run(rows, labels))
        figure = _figure(check, rows, labels, styles, render)
        if figure:
            parts.append(figure)
        parts.append(_all_rows(rows))
    if len(prediction.tests):
        parts.append(_prediction(prediction, records, render))
    return "\n".join(parts)


def _intro(has_step_norms: bool) -> str:
    missing = "" if has_step_norms else (
        " GSGP Lemma 3.2 is not shown: no run recorded step norms (train with <code>record.step_norms: k</code>).")
    return ('<p class="note">The papers\' record-based claims, checked on the runs with at least two records '
            "(<code>rankbias.theory.record_checks</code>, <code>prediction_4_1</code>; docs/theory.md). "
            "The gradient checks (GSGP Lemma 3.1, GP Lemma 2 and Theorem 1, CHEN Theorem 2.6) load the network: "
            f"<code>rankbias theory RESULTS/RUN</code> prints them.{missing} "
            "<em>holds</em>: the measured value is within the bound; <em>trivial</em>: the bound says nothing "
            "(e.g. it exceeds the matrix's smaller dimension, or λ = 0); <em>no prediction</em>: the claim does not "
            "apply (a baseline without weight decay, momentum for Lemma 3.2).</p>")


def _counts(rows: pd.DataFrame) -> dict:
    """How many rows are trivial (the bound says nothing: they hold by default) and, of the
    informative rest, how many hold, fail and make no prediction."""
    trivial = rows["trivial"].astype(bool)
    holds = rows.loc[~trivial, "holds"]
    return {"checked": len(rows), "trivial": int(trivial.sum()), "informative": int((~trivial).sum()),
            "holds": int(holds.eq(True).sum()), "fails": int(holds.eq(False).sum()),
            "no prediction": int(holds.isna().sum())}


def _overview(checks: pd.DataFrame, tests: pd.DataFrame) -> str:
    """One row per check: how many of its rows are trivial and informative, and of the informative
    how many hold, fail, make no prediction; for Prediction 4.1, how many of its knobs (each
    informative; a verdict other than holds or fails: no prediction)."""
    rows = [{"check": check, "claim": CHECKS[check][0], **_counts(checks[checks["check"] == check])}
            for check in CHECKS if (checks["check"] == check).any()]
    if len(tests):
        verdicts = tests["verdict"]
        holds, fails = int(verdicts.eq(HOLDS).sum()), int(verdicts.eq(FAILS).sum())
        rows.append({"check": "gsgp_prediction_4_1", "claim": PREDICTION[0], "checked": len(tests), "trivial": 0,
                     "informative": len(tests), "holds": holds, "fails": fails,
                     "no prediction": len(tests) - holds - fails})
    return table_html(pd.DataFrame(rows))


def _verdict(rows: pd.DataFrame) -> str:
    """The check in one sentence; trivial rows (which hold whatever the weights) are never counted
    as support."""
    c = _counts(rows)
    if not c["informative"]:
        text = (f"All {c['checked']} rows are trivial: the bound says nothing about these runs, so the check "
                "neither holds nor fails here.")
    else:
        text = (f"{c['informative']} of {c['checked']} rows are informative: holds in {c['holds']}, fails in "
                f"{c['fails']}, no prediction in {c['no prediction']}; {c['trivial']} trivial (the bound says "
                "nothing).")
    return f"<p><strong>{html.escape(text)}</strong></p>"


def _per_run(rows: pd.DataFrame, labels: dict) -> str:
    """Per run: the counts, the epoch, the check's parameters and the most common reasons."""
    table = []
    for run_id, group in rows.groupby("run_id", sort=False):
        row = {"run_id": run_id, "settings": labels.get(run_id, ""), "epoch": _span(group["epoch"]),
               "param": _span(group["param"], numeric=False), **_counts(group)}
        if len(group) == 1:
            row |= {"measured": group["measured"].iloc[0], "bound": group["bound"].iloc[0]}
        if "norm_ratio" in group and group["norm_ratio"].notna().any():
            ratio = group["norm_ratio"].astype(float)
            row["‖W_T−1‖/‖W_T‖"] = (
                f"{ratio.min():.4g} – {ratio.max():.4g}" if ratio.min() != ratio.max() else f"{ratio.min():.4g}"
            )
        row["why"] = _why(group["note"])
        table.append(row)
    frame = pd.DataFrame(table)
    return table_html(frame.drop(columns=[c for c in ("settings",) if not frame[c].astype(bool).any()]), sortable=True)


def _span(values: pd.Series, numeric: bool = True):
    distinct = list(dict.fromkeys(values.dropna().tolist()))
    if not distinct:
        return ""
    if len(distinct) == 1:
        return distinct[0]
    if numeric:
        return f"{min(distinct)}–{max(distinct)}"
    return f"{distinct[0]} … {distinct[-1]} ({len(distinct)})"


def _why(notes: pd.Series) -> str:
    """The distinct parts of the rows' notes, most common first (at most :data:`WHY_PARTS`)."""
    parts = Counter(p for note in notes for p in str(note).split("; ") if p and not p.startswith(RESTATED))
    common = [p for p, _ in parts.most_common()]
    more = f" (+{len(common) - WHY_PARTS} more: see all rows)" if len(common) > WHY_PARTS else ""
    return "; ".join(common[:WHY_PARTS]) + more


def _all_rows(rows: pd.DataFrame) -> str:
    """Every row of the check, folded (at most :data:`MAX_ROWS`)."""
    keep = [c for c in rows.columns if c != "check" and rows[c].notna().any()
            and not rows[c].map(lambda v: isinstance(v, (list, np.ndarray))).any()]
    shown = rows[keep].head(MAX_ROWS)
    cut = f" (the first {MAX_ROWS}; <code>rankbias theory</code> prints all)" if len(rows) > MAX_ROWS else ""
    table = table_html(shown.astype(object), sortable=True)
    return f"<details><summary>All {len(rows)} rows{cut}</summary>{table}</details>"


def _figure(check: str, rows: pd.DataFrame, labels: dict, styles: dict, render) -> str | None:
    if check == "gsgp_theorem_3_3":
        finite = rows.assign(bound=rows["bound"].astype(float), measured=rows["measured"].astype(float))
        finite = finite[np.isfinite(finite["bound"])]
        if finite.empty:
            return ('<p class="note">No figure: every bound is infinite (no weight decay, or the whole training\'s '
                    "Σμλ' stays below log(2/ε)).</p>")
        tightest = finite.groupby("run_id")["bound"].min().nsmallest(4).index
        shown = finite[finite["run_id"].isin(tightest)]
        which = ", the four with the tightest bounds" if len(tightest) < finite["run_id"].nunique() else ""
        caption = ("Mean over the counted matrices of the bound (solid) and of the measured ε-rank (dashed) against ε, "
                   "log axes; dotted: the matrices' smaller dimension. GSGP Fig. 18. "
                   f"Runs with weight decay{which}, in the colours of the figures above. What to see: the theorem "
                   "says something only where a solid line lies below the dotted one; the dashed line must stay "
                   "below its solid line.")
        return render("theory_theorem_3_3", "GSGP Theorem 3.3 (Fig. 18)", caption,
                      lambda: figures.theorem_3_3_figure(shown, labels=labels, styles=styles))
    if check == "gsgp_lemma_3_2":
        teeth = (~rows["trivial"] & rows["holds"].notna()).groupby(rows["run_id"], sort=False).sum()
        run_id = teeth.idxmax()  # the run where the bound says most (plain SGD, not trivial)
        caption = (f"Run {html.escape(run_id)} ({html.escape(labels.get(run_id, ''))}), the run with the most "
                   "non-trivial rows, last epoch with step norms: per matrix, the distance to rank ≤ m<sub>l</sub>·B·n "
                   "(solid) and the bound (dashed) against n.")
        return render("theory_lemma_3_2", "GSGP Lemma 3.2", caption,
                      lambda: figures.lemma_3_2_figure(rows, run_id=run_id))
    return None


def _prediction(prediction, records: Results, render) -> str:
    """The per-knob verdicts (verdict, effect [interval], p, control, why), the figure, and the
    blocks of runs folded."""
    tests, blocks = prediction.tests, prediction.blocks
    heading, claim = PREDICTION
    summary = "; ".join(f"{row['symbol']}: {row['verdict']}" for _, row in tests.iterrows())
    parts = [f'<h3 id="theory-gsgp_prediction_4_1">{html.escape(heading)}</h3><p class="note">{claim}</p>',
             f"<p><strong>{html.escape(summary)}.</strong></p>"]
    left_out = records.runs.loc[records.runs["state"] != "done", "run_id"].tolist()
    if left_out:
        parts.append(f'<p class="note">Left out (not finished): {html.escape(", ".join(left_out))}.</p>')
    parts.append(table_html(_verdicts(tests)))
    if _column(tests, "effect").notna().any():
        caption = ("Per knob, the effect (% of the full rank) with its bootstrap 95 % interval over seeds; grey: "
                   "the same trend among the runs without weight decay (the control of B and μ); dashed: the minimum "
                   "effect; above each knob its verdict.")
        parts.append(render("theory_prediction_4_1", "GSGP Prediction 4.1", caption,
                            lambda: figures.prediction_figure(tests)))
    if len(blocks):
        shown = blocks.assign(knob=blocks["knob"].map(symbol),
                              block=blocks["block"].astype(str).str.removeprefix(" · "))
        shown = shown[[c for c in ("knob", "group", "block", "seed", "levels", "runs", "tau", "drop") if c in shown]]
        shown = shown.rename(columns={"tau": "signed τ", "drop": "drop (% of full rank)"})
        table = table_html(shown.astype(object), sortable=True)
        parts.append(f"<details><summary>All {len(blocks)} blocks of runs</summary>{table}</details>")
    return "\n".join(parts)


def _column(tests: pd.DataFrame, name: str) -> pd.Series:
    return tests[name].astype(float) if name in tests else pd.Series(np.nan, index=tests.index)


def _interval(effect: float, low: float, high: float) -> str:
    """``12.3 % [4.5, 20.1]``; without an interval (one seed) the effect alone; nothing without an effect."""
    if not np.isfinite(effect):
        return ""
    return f"{effect:.1f} % [{low:.1f}, {high:.1f}]" if np.isfinite(low) and np.isfinite(high) else f"{effect:.1f} %"


def _verdicts(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per knob: knob, verdict, effect [interval], p, control [interval], seeds, blocks, why."""
    effect, low, high = (_column(tests, c) for c in ("effect", "ci_low", "ci_high"))
    control, control_low, control_high = (
        _column(tests, c) for c in ("control_effect", "control_ci_low", "control_ci_high")
    )
    seeds = tests["seeds"] if "seeds" in tests else pd.Series(np.nan, index=tests.index)
    frame = pd.DataFrame({
        "knob": tests["symbol"],
        "verdict": tests["verdict"],
        "effect [95 % interval]": [_interval(*v) for v in zip(effect, low, high)],
        "p": _column(tests, "p"),
        "λ = 0 control [95 % interval]": [_interval(*v) for v in zip(control, control_low, control_high)],
        "seeds": [len(s) if isinstance(s, (list, tuple, np.ndarray)) else None for s in seeds],
        "blocks": [int(b) if np.isfinite(b) else None for b in _column(tests, "blocks")],
        "why": tests["why"],
    })  # fmt: skip
    if not frame["λ = 0 control [95 % interval]"].astype(bool).any():
        frame = frame.drop(columns=["λ = 0 control [95 % interval]"])
    return frame.astype(object)


def _run_labels(records: Results, groups: list | None = None) -> tuple[dict, dict]:
    """run_id → the settings that vary in its group in the papers' symbols (``B = 16, λ = 0.005``;
    with several groups, then its group), and run_id → its line style: the colour and marker the
    figures give the value of the group's first varied setting. Both in the figures' order."""
    runs = records.runs
    if not groups:
        groups = [SimpleNamespace(number=0, run_ids=list(runs["run_id"]), varied=ordered_keys(varied_keys(runs)))]
    nbsp = lambda text: text.replace(" = ", "\u00a0=\u00a0")
    labels, styles = {}, {}
    for group in groups:
        table = runs[runs["run_id"].isin(set(group.run_ids))]
        keys = [k for k in group.varied if k in table]
        if keys:
            table = table.sort_values(keys, key=lambda col: col.map(partial(_position, order_values(col))))
        for _, row in table.iterrows():
            text = ", ".join(nbsp(label(k, row[k])) for k in keys)
            labels[row["run_id"]] = ", ".join(t for t in (text, f"group {group.number}" if group.number else "") if t)
            if keys:
                values = order_values(runs[keys[0]])
                styles[row["run_id"]] = line_style(_position(values, row[keys[0]]), len(values))
    return labels, styles


def _position(values: list, value) -> int:
    return next((i for i, v in enumerate(values) if same_value(v, value)), 0)


__all__ = ["theory_section"]
