"""Which figures a report shows, chosen from what varied between the runs.

First the runs are *grouped* (:func:`group_runs`): a group is the runs that share every setting
but the knobs the papers vary (B, μ, λ, momentum: :data:`KNOBS`) and the seeds; two such sets that
differ in one setting only (a sweep over it: ``model.width``, ``train.epochs`` ...) are one group,
unless that setting is the model or the data set. Runs of different models, data sets or
schedules are never drawn in one figure. Within a group the
varied keys are ordered B, μ, λ, momentum, model, data, then the rest (``plots.select``);
call them k0, k1, k2 ... Each family binds them to its roles and draws one figure per value of
the keys left over (at most :data:`MAX_SLICES`; past that, only the slice of the run with the
lowest final average rank):

1. rank-vs-epoch: lines k0, panels k1 (always).
2. heatmap: x k0, y k1, panels k2 (two or more varied keys); also of test accuracy.
3. layer-ranks: lines k0, panels k1 (models with three or more counted matrices).
4. layer-spectra: lines k0, one panel per counted matrix.
5. convergence: lines λ if it varied (else k0), panels the next key; 6. norm-ratio: panels k0,
   the other keys at the lowest-rank run's values.
7. weight-decay: λ varied on a regression (``mse_scalar``) or ``twolayer`` sweep.
8. rank-vs-eps: lines k0, panels k1.
9. spectra-over-training: panels k0 (its extreme values past four), the other keys at the
   lowest-rank run's values, the matrix with that run's lowest final rank.

Seeds (``conventions.REPLICATE_KEYS``) are not varied keys: the figures draw the mean over a
setting's replicates; spectra-over-training shows the lowest-rank run's seed.
"""

from __future__ import annotations

import html
import inspect
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..conventions import REPLICATE_KEYS, symbol
from ..plots import FIGURES
from ..plots.select import at_epoch, fmt, label, order_values, ordered_keys
from ..store.records import Results, subset, varied_keys

MAX_SLICES = 4
KNOBS = ("train.batch_size", "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum")
SEPARATE = ("model.name", "data.name")  # never in one figure, even as the one setting a sweep varies
NAMED_APART = 2  # settings named in a group's title (all of them in the page's table of groups)

# What each figure shows (trusted HTML, written here; the dynamic parts of a caption are escaped).
ABOUT = {
    "rank-vs-epoch": (
        "Average rank of the counted weight matrices per epoch (top) and train (solid) / test (dashed) accuracy "
        "(bottom); panels side by side share their y-axes. What to see: with weight decay the papers predict a lower "
        "rank for smaller B, larger μ and larger λ at about the same accuracy; without weight decay (λ = 0) the rank "
        "stays near full whatever B and μ. GSGP Figs. 2–13, GP Figs. 2–5."
    ),
    "heatmap": (
        "Final average rank over two hyperparameters, each cell annotated; the colour scale runs from 0 to the full "
        "rank, so a colour difference is a rank difference at its true scale. What to see: the rank falls towards "
        "small B and large μ or λ. GSGP Fig. 1."
    ),
    "heatmap-acc": (
        "Final test accuracy over the same two hyperparameters, each cell annotated; the colour scale is the whole "
        "range 0–1, so cells of one colour have about the same accuracy. What to see: the lower ranks of the figure "
        "above come at about the same accuracy."
    ),
    "layer-ranks": (
        "Rank of each weight matrix against its position in the network at the end of training; panels share the "
        "y-axis. What to see: with weight decay, lower ranks in some layers (a bottleneck in the middle layers of "
        "MLP-BN, balanced ranks in residual networks). GP Figs. 6–7."
    ),
    "layer-spectra": (
        "Normalized singular values σ<sub>i</sub>/‖W‖ of each matrix at the end of training, sorted, log scale, one "
        "panel per matrix on one y-axis; the dashed line is ε, so the rank is the number of points above it. What to "
        "see: the spectra of the lower-rank settings drop below ε at a smaller index. GSGP Figs. 16–17."
    ),
    "convergence": (
        "GP's distance d(W<sub>t+1</sub>, W<sub>t</sub>) between consecutive records (mean over matrices of "
        "‖W<sub>t+1</sub> − W<sub>t</sub>‖<sub>F</sub>) and the train loss, log scales, and the train accuracy per "
        "epoch; panels share their y-axes. What to see: with weight decay the distance stays away from zero (GP "
        "Props. 1–2: SGD noise keeps the weights moving); without it, it may fall with the loss. GP Fig. 1."
    ),
    "norm-ratio": (
        "Per-matrix ‖W<sub>t−1</sub>‖<sub>F</sub> / ‖W<sub>t</sub>‖<sub>F</sub> between consecutive records, one "
        "line per matrix, panels on one y-axis; dotted: 1. What to see: the ratio settling near 1, the equilibrium "
        "GSGP Thm. 3.3 assumes. GSGP Figs. 14–15."
    ),
    "weight-decay": (
        "At the end of training against λ: the stable rank of the first counted matrix, the train MSE and the "
        "test − train MSE (three quantities: each panel has its own y-axis). What to see: with larger λ a stable "
        "rank nearer 1 and a smaller gap. CHEN Sec. 5."
    ),
    "rank-vs-eps": (
        "Average rank at the end of training against the threshold ε, from the stored singular values; the dotted "
        "line is the recorded ε; panels share the y-axis. What to see: whether the order of the settings at the "
        "recorded ε holds at other thresholds, i.e. is not an artefact of the threshold."
    ),
    "spectra-over-training": (
        "One matrix's normalized singular values at every record: epoch (x) × index i (y, the largest σ at the "
        "bottom), colour log<sub>10</sub> σ<sub>i</sub>/‖W‖ on one scale for every panel; the white contour is ε: "
        "the indices below it have σ<sub>i</sub>/‖W‖ &gt; ε, so the rank at an epoch is the height of the contour. "
        "What to see: the contour coming down as the rank falls."
    ),
}


@dataclass
class Group:
    """Runs that may be drawn in one figure (:func:`group_runs`)."""

    number: int  # 1, 2, ... in page order; 0 when the report has one group
    run_ids: list[str]
    name: str  # "mlp-bn-4-64 on digits"
    apart: dict  # setting -> value that sets it apart from the other groups of its model and data
    varied: list[str]  # the settings that vary inside it (seeds left out)

    @property
    def title(self) -> str:
        """'group 2: mlp-bn-4-64 on digits, train.epochs = 30, …'."""
        named = [label(k, v) for k, v in list(self.apart.items())[:NAMED_APART]]
        more = ", …" if len(self.apart) > NAMED_APART else ""
        return f"group {self.number}: " + ", ".join([self.name, *named]) + more


@dataclass
class Chosen:
    """One figure of the report: which family, with which arguments, and why."""

    family: str
    kwargs: dict
    reason: str
    where: dict = field(default_factory=dict)
    about: str = ""
    group: Group | None = None  # the runs it draws from, when the report has several groups

    @property
    def name(self) -> str:
        """A file stem: the group, the family and the fixed settings, e.g. ``g2_rank-vs-epoch_weight_decay=0.005``."""
        values = {k: fmt(v) if not isinstance(v, list) else "+".join(map(fmt, v)) for k, v in self.where.items()}
        parts = [self.about or self.family] + [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items()]
        if self.group is not None:
            parts.insert(0, f"g{self.group.number}")
        return re.sub(r"[^A-Za-z0-9._=+-]", "_", "_".join(parts))

    @property
    def title(self) -> str:
        """The family (and its number in docs/report.md) and the settings fixed; the page numbers
        its figures."""
        fixed = ", ".join(
            label(k, v) if not isinstance(v, list) else f"{symbol(k)} ∈ {{{', '.join(map(fmt, v))}}}"
            for k, v in self.where.items()
        )
        kind = " (test accuracy)" if self.about == "heatmap-acc" else ""
        group = f"group {self.group.number}" if self.group is not None else ""
        inside = "; ".join(t for t in (group, fixed) if t)
        return f"{self.family}{kind}" + (f" ({inside})" if inside else "")

    @property
    def caption(self) -> str:
        """HTML: what the figure shows, what to look for, and why it was chosen."""
        return f"{ABOUT[self.about or self.family]} Chosen because {html.escape(self.reason)}."

    def draw(self, results: Results, eps: float | None = None, norm: str | None = None) -> Figure:
        """The figure; ``eps``/``norm`` go to every family that takes them (labels, ε lines)."""
        function = FIGURES[self.family].function
        accepted = inspect.signature(function).parameters
        extra = {k: v for k, v in {"eps": eps, "norm": norm}.items() if v is not None and k in accepted}
        runs = self.group.run_ids if self.group is not None else None
        return function(results, where=self.where or None, runs=runs, **self.kwargs, **extra)


def group_runs(runs: pd.DataFrame) -> list[Group]:
    """The runs in groups that may share a figure: equal in every setting but :data:`KNOBS` and
    the seeds; sets of runs that differ in one setting only are joined (a sweep over it), unless
    that setting is the model or the data set."""
    keys = [k for k in ordered_keys(varied_keys(runs)) if k not in KNOBS and k not in REPLICATE_KEYS]
    settings = runs[keys].astype(str).agg(" | ".join, axis=1) if keys else pd.Series("", index=runs.index)
    distinct = list(dict.fromkeys(settings))
    values = {s: runs.loc[settings == s, keys].iloc[0].astype(str).tolist() for s in distinct}
    parent = {s: s for s in distinct}

    def root(s):
        while parent[s] != s:
            s = parent[s]
        return s

    apart = lambda a, b: [k for k, x, y in zip(keys, values[a], values[b]) if x != y]
    for i, a in enumerate(distinct):
        for b in distinct[i + 1 :]:
            differ = apart(a, b)
            if len(differ) == 1 and differ[0] not in SEPARATE:
                parent[root(b)] = root(a)
    members = {}
    for index, s in settings.items():
        members.setdefault(root(s), []).append(index)
    groups = []
    for rows in members.values():
        table = runs.loc[rows]
        first = table.iloc[0]
        name = f"{first['model.name']} on {first['data.name']}"
        inside = [k for k in ordered_keys(varied_keys(table)) if k not in REPLICATE_KEYS]
        groups.append((name, table, inside))
    groups.sort(key=lambda g: (-len(g[1]), g[0]))  # the largest sweep first
    out = []
    for number, (name, table, inside) in enumerate(groups, start=1):
        kin = [t for n, t, _ in groups if n == name and t is not table]
        apart = {}
        for k in sorted(keys, key=lambda k: (k.startswith("record."), not k.startswith("train."), k)):
            if k not in inside and any(t[k].astype(str).ne(str(table[k].iloc[0])).any() for t in kin):
                apart[k] = _plain(table[k].iloc[0])
        out.append(Group(number if len(groups) > 1 else 0, list(table["run_id"]), name, apart, inside))
    return out


def with_records(results: Results) -> pd.DataFrame:
    """The runs that have at least one record."""
    if not len(results.scalars):
        return results.runs.iloc[0:0]
    return results.runs[results.runs["run_id"].isin(set(results.scalars["run_id"]))]


def choose_figures(results: Results) -> list[Chosen]:
    """The report's figures for these records, group by group (see the module docstring for the rules)."""
    runs = with_records(results)
    if runs.empty:
        return []
    groups = group_runs(runs)
    chosen = []
    for group in groups:
        picked = _choose(results, runs[runs["run_id"].isin(set(group.run_ids))])
        for c in picked:
            c.group = group if len(groups) > 1 else None
        chosen += picked
    return chosen


def _choose(results: Results, runs: pd.DataFrame) -> list[Chosen]:
    """The figures of one group of runs."""
    keys = ordered_keys([x for x in varied_keys(runs) if x not in REPLICATE_KEYS])
    results = subset(results, set(runs["run_id"]))
    k = keys + [None, None, None]
    best = _best_run(results, runs)
    names = lambda ks: " and ".join(symbol(x) for x in ks if x) or "nothing varied"
    chosen: list[Chosen] = []

    def add(family: str, kwargs: dict, fixed: list, reason: str, about: str = "", **extra) -> None:
        for where in _slices(runs, [x for x in fixed if x], keys, best):
            chosen.append(Chosen(family, {**kwargs, **extra}, reason, where, about))

    add(
        "rank-vs-epoch",
        {"vary": k[0], "panel": k[1]},
        k[:2],
        f"{names(k[:2])} varied" if keys else "it is always shown",
    )
    if len(keys) >= 2:
        add("heatmap", {"x": k[0], "y": k[1], "panel": k[2]}, k[:3], f"two hyperparameters varied ({names(k[:2])})")
        if np.isfinite(results.scalars["test_acc"].to_numpy(dtype=float)).any():
            add(
                "heatmap",
                {"x": k[0], "y": k[1], "panel": k[2], "value": "test_acc"},
                k[:3],
                f"two hyperparameters varied ({names(k[:2])})",
                about="heatmap-acc",
            )
    counted = results.layers[results.layers["counted"]].groupby("run_id")["layer"].nunique()
    if len(counted) and counted.max() >= 3:
        add("layer-ranks", {"vary": k[0], "panel": k[1]}, k[:2], f"the model has {counted.max()} counted matrices")
    add("layer-spectra", {"vary": k[0]}, k[:1], f"{names(k[:1])} varied" if keys else "it is always shown")
    decay = "optimizer.weight_decay"
    lines = decay if decay in keys else k[0]
    others = [x for x in keys if x != lines]
    add(
        "convergence",
        {"vary": lines, "panel": others[0] if others else None},
        [lines, *others[:1]],
        f"{names([lines])} varied" if lines else "it is always shown",
    )
    for where in _slices(runs, [x for x in k[:1] if x], keys, best, force_best=True):
        chosen.append(Chosen("norm-ratio", {"panel": k[0]}, "it checks GSGP Thm. 3.3's assumption", where))
    regression = (runs["loss"] == "mse_scalar").any() or runs["model.name"].astype(str).str.startswith("twolayer").any()
    if decay in keys and regression:
        rest = [x for x in keys if x != decay]
        add(
            "weight-decay",
            {"vary": rest[0] if rest else None},
            [decay, *rest[:1]],
            "λ varied on a regression (CHEN) sweep",
        )
    add("rank-vs-eps", {"vary": k[0], "panel": k[1]}, k[:2], "the rank depends on the threshold ε")
    panel_runs = {}
    if k[0] is not None:
        values = order_values(runs[k[0]])
        if len(values) > 4:
            panel_runs = {k[0]: [values[0], values[-1]]}
    seeds = {x: _plain(runs.loc[runs["run_id"] == best, x].item()) for x in varied_keys(runs) if x in REPLICATE_KEYS}
    where = _slices(runs, [x for x in k[:1] if x], keys, best, force_best=True)[0] | panel_runs | seeds
    layer = _lowest_layer(results, best)
    reason = f"it shows how {layer}'s spectrum evolves"
    chosen.append(Chosen("spectra-over-training", {"panel": k[0], "layer": layer}, reason, where))
    return chosen


def _best_run(results: Results, runs: pd.DataFrame) -> str:
    """The run with the lowest final average rank (done runs first)."""
    final = at_epoch(results.scalars, None).set_index("run_id")["avg_rank"]
    table = runs.assign(rank=runs["run_id"].map(final), bad=runs["state"] != "done").sort_values(["bad", "rank"])
    return table["run_id"].iloc[0]


def _lowest_layer(results: Results, run_id: str) -> str:
    layers = at_epoch(results.layers[results.layers["run_id"] == run_id], None)
    counted = layers[layers["counted"]] if layers["counted"].any() else layers
    return counted.sort_values(["eps_rank", "index"])["layer"].iloc[0]


def _slices(runs: pd.DataFrame, bound: list[str], keys: list[str], best: str, force_best: bool = False) -> list[dict]:
    """One ``where`` per combination of the keys not ``bound`` that the runs have."""
    rest = [x for x in keys if x not in bound]
    if not rest:
        return [{}]
    combos = runs[rest].astype(object).drop_duplicates()
    if force_best or len(combos) > MAX_SLICES:
        combos = runs.loc[runs["run_id"] == best, rest]
    combos = combos.sort_values(rest, key=lambda col: col.map(lambda v: order_values(col).index(v)))
    return [{key: _plain(value) for key, value in zip(rest, row)} for row in combos.itertuples(index=False)]


def _plain(value):
    return value.item() if hasattr(value, "item") else value
