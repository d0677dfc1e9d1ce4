"""Which figures a report shows, chosen from what varied between the runs.

The varied keys are ordered B, μ, λ, momentum, model, data, then the rest (``plots.select``);
call them k0, k1, k2 ... Each family binds them to its roles and draws one figure per value of
the keys left over (at most :data:`MAX_SLICES`; past that, only the slice of the run with the
lowest final average rank):

1. rank-vs-epoch: lines k0, panels k1 (always).
2. heatmap: x k0, y k1, panels k2 (two or more varied keys); also of test accuracy.
3. layer-ranks: lines k0, panels k1 (models with three or more counted matrices).
4. layer-spectra: lines k0, one panel per counted matrix.
5. convergence: lines λ if it varied (else k0), panels the next key; norm-ratio: panels k0,
   the other keys at the lowest-rank run's values.
6. weight-decay: λ varied on a regression (``mse_scalar``) or ``twolayer`` sweep.
7. rank-vs-eps: lines k0, panels k1.
8. spectra-over-training: panels k0 (its extreme values past four), the other keys at the
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
from ..store.records import Results, varied_keys

MAX_SLICES = 4

# What each figure shows (trusted HTML, written here; the dynamic parts of a caption are escaped).
ABOUT = {
    "rank-vs-epoch": (
        "Average rank of the counted weight matrices per epoch (top) and train (solid) / test (dashed) accuracy "
        "(bottom). GSGP Figs. 2–13, GP Figs. 2–5."
    ),
    "heatmap": "Final average rank over two hyperparameters, each cell annotated. GSGP Fig. 1.",
    "heatmap-acc": "Final test accuracy over the same two hyperparameters.",
    "layer-ranks": (
        "Rank of each weight matrix against its position in the network at the end of training. GP Figs. 6–7."
    ),
    "layer-spectra": (
        "Normalized singular values σ<sub>i</sub>/‖W‖ of each matrix at the end of training, sorted; the dashed line "
        "is ε, so the rank is the number of points above it. GSGP Figs. 16–17."
    ),
    "convergence": (
        "GP's distance d(W<sub>t+1</sub>, W<sub>t</sub>) between consecutive records (mean over matrices of "
        "‖W<sub>t+1</sub> − W<sub>t</sub>‖<sub>F</sub>), train loss and train accuracy per epoch, log scale. "
        "GP Fig. 1."
    ),
    "norm-ratio": (
        "Per-matrix ‖W<sub>t−1</sub>‖<sub>F</sub> / ‖W<sub>t</sub>‖<sub>F</sub> between consecutive records; "
        "GSGP Thm. 3.3 assumes it tends to 1. GSGP Figs. 14–15."
    ),
    "weight-decay": (
        "Stable rank of the first counted matrix, train MSE and test − train MSE at the end of training against λ. "
        "CHEN Sec. 5."
    ),
    "rank-vs-eps": (
        "Average rank at the end of training against the threshold ε, from the stored singular values; the dotted "
        "line is the recorded ε."
    ),
    "spectra-over-training": (
        "One matrix's normalized singular values at every record: epoch × index i, colour log<sub>10</sub> "
        "σ<sub>i</sub>/‖W‖; the white contour is ε, so the rank at an epoch is the height of the region above it."
    ),
}


@dataclass
class Chosen:
    """One figure of the report: which family, with which arguments, and why."""

    family: str
    kwargs: dict
    reason: str
    where: dict = field(default_factory=dict)
    about: str = ""

    @property
    def name(self) -> str:
        """A file stem: the family and the fixed settings, e.g. ``rank-vs-epoch_weight_decay=0.005``."""
        values = {k: fmt(v) if not isinstance(v, list) else "+".join(map(fmt, v)) for k, v in self.where.items()}
        parts = [self.about or self.family] + [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items()]
        return re.sub(r"[^A-Za-z0-9._=+-]", "_", "_".join(parts))

    @property
    def title(self) -> str:
        number = FIGURES[self.family].number
        fixed = ", ".join(
            label(k, v) if not isinstance(v, list) else f"{symbol(k)} ∈ {{{', '.join(map(fmt, v))}}}"
            for k, v in self.where.items()
        )
        kind = " (test accuracy)" if self.about == "heatmap-acc" else ""
        return f"{number}. {self.family}{kind}" + (f" ({fixed})" if fixed else "")

    @property
    def caption(self) -> str:
        """HTML: what the figure shows, and why it was chosen."""
        return f"{ABOUT[self.about or self.family]} Chosen because {html.escape(self.reason)}."

    def draw(self, results: Results, eps: float | None = None, norm: str | None = None) -> Figure:
        """The figure; ``eps``/``norm`` go to every family that takes them (labels, ε lines)."""
        function = FIGURES[self.family].function
        accepted = inspect.signature(function).parameters
        extra = {k: v for k, v in {"eps": eps, "norm": norm}.items() if v is not None and k in accepted}
        return function(results, where=self.where or None, **self.kwargs, **extra)


def choose_figures(results: Results) -> list[Chosen]:
    """The report's figures for these records (see the module docstring for the rules)."""
    runs = (
        results.runs[results.runs["run_id"].isin(set(results.scalars["run_id"]))]
        if len(results.scalars)
        else results.runs.iloc[0:0]
    )
    if runs.empty:
        return []
    keys = ordered_keys([x for x in varied_keys(runs) if x not in REPLICATE_KEYS])
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
