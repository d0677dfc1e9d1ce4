"""Which runs a figure shows and which hyperparameter plays which role in it.

A figure family has *roles* — ``vary`` (one line per value), ``panel`` (one panel per value),
``x``/``y`` (heatmap axes) — each bound to a config key. Roles left ``None`` take the varied keys
in :data:`PREFERRED` order. Runs that still differ in a key no role covers would be drawn on top
of each other: that is refused with a message that says how to pick them (``where=``).

Runs that differ only in :data:`REPLICATE_KEYS` (the seeds) are *replicates* of one configuration:
no role takes those keys unless asked to, and a figure draws one line (cell) per configuration, the
mean over its replicates (:meth:`Selection.replicates`, :meth:`Selection.replicate_note`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..conventions import REPLICATE_KEYS, SYMBOLS, symbol
from ..errors import PlotError
from ..store.records import Results, learned, subset, varied_keys
from .style import line_style

PREFERRED = [
    "train.batch_size",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "model.name",
    "data.name",
    "loss",
]
ALIASES = {"mu": "optimizer.lr", "lambda": "optimizer.weight_decay", "wd": "optimizer.weight_decay"}


def fmt(value) -> str:
    """A hyperparameter value as the papers print it: 0.005, 1e-05, 8, mlp-bn-4-64."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def label(key: str, value) -> str:
    return f"{symbol(key)} = {fmt(value)}"


def resolve_key(runs: pd.DataFrame, name: str) -> str:
    """A config key from its full name, its paper symbol (B, μ, λ), an alias or its last part."""
    keys = [c for c in runs.columns if "." in c or c == "loss"]
    if name in keys or name == "run_id":
        return name
    by_symbol = {v: k for k, v in SYMBOLS.items()} | ALIASES
    if name in by_symbol:
        return by_symbol[name]
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    varied = ", ".join(varied_keys(runs)) or "nothing"
    raise PlotError(
        f"unknown hyperparameter {name!r}: use a config key such as optimizer.lr (these runs vary in: {varied})"
    )


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def same_value(value, wanted, prefix: bool = False) -> bool:
    if _is_number(value) and _is_number(wanted):
        return math.isclose(value, wanted, rel_tol=1e-9)
    return str(value).startswith(str(wanted)) if prefix else str(value) == str(wanted)


def _matches(column: pd.Series, wanted, prefix: bool = False) -> pd.Series:
    """Rows whose value equals ``wanted`` (or one of a list or set); numbers compare with a
    tolerance. A tuple is one value: list-valued config keys (``schedule.milestones``) are tuples."""
    wanted = list(wanted) if isinstance(wanted, (list, set)) else [wanted]
    return column.map(lambda v: any(same_value(v, w, prefix) for w in wanted)).astype(bool)


def order_values(values) -> list:
    """Distinct values, numbers ascending, then the rest by text."""
    distinct = list(dict.fromkeys(values))
    return sorted(distinct, key=lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))


@dataclass
class Selection:
    """The runs of one figure and the config key bound to each role."""

    results: Results
    keys: dict  # role -> config key or None
    every: pd.DataFrame | None = None  # the runs before ``where``/``runs``: what fixes each value's colour
    _left_out: dict | None = field(default=None, repr=False)


    @property
    def runs(self) -> pd.DataFrame:
        return self.results.runs

    def values(self, role: str) -> list:
        key = self.keys.get(role)
        return [None] if key is None else order_values(self.runs[key])

    def groups(self, role: str):
        """(value, runs with that value) for each value of ``role``'s key, in order."""
        key = self.keys.get(role)
        if key is None:
            return [(None, self.runs)]
        return [(v, self.runs[_matches(self.runs[key], v)]) for v in self.values(role)]

    def replicates(self, members: pd.DataFrame, role: str = "vary"):
        """(position, value, run_ids) of each value of ``role`` that ``members`` have, in order.

        ``members`` agree in every other role (a panel, a cell), so the runs of one value differ
        at most in :data:`REPLICATE_KEYS` not bound to a role: ``run_ids`` are the replicates
        of one configuration, one run when the sweep has one seed.
        """
        key, out = self.keys.get(role), []
        for i, value in enumerate(self.values(role)):
            hit = members if key is None else members[_matches(members[key], value)]
            if len(hit):
                out.append((i, value, list(hit["run_id"])))
        return out

    def lines(self, members: pd.DataFrame, role: str = "vary"):
        """(position, value, run_id) of each run of ``members``, by the order of ``role``'s values."""
        return [(i, value, run_id) for i, value, run_ids in self.replicates(members, role) for run_id in run_ids]

    def replicate_note(self, band: bool = True) -> str:
        """'mean of 3 seeds, band: min–max' (without ``band``: 'mean of 3 seeds') when the
        configurations have replicates, else ''. A configuration is the runs that agree in every
        config key but the :data:`REPLICATE_KEYS` no role is bound to.
        """
        keys = [k for k in varied_keys(self.runs) if k not in REPLICATE_KEYS or k in self.keys.values()]
        sizes = self.runs[keys].astype(str).value_counts() if keys else pd.Series([len(self.runs)])
        low, high = int(sizes.min()), int(sizes.max())
        if high < 2:
            return ""
        return f"mean of {low if low == high else f'{low}–{high}'} seeds" + (", band: min–max" if band else "")

    def label(self, role: str, value) -> str:
        key = self.keys.get(role)
        return "" if key is None else label(key, value)

    def left_out(self) -> dict:
        """:func:`left_out` of these runs (computed once)."""
        if self._left_out is None:
            self._left_out = left_out(self.results)
        return self._left_out

    def style(self, role: str, value, points: int = 0) -> dict:
        """Colour and marker of ``value`` of ``role``: fixed by its place among the values of the key
        in every run with records (not only the runs picked), so a value has one colour in every
        figure of a page."""
        key = self.keys.get(role)
        runs = self.runs if self.every is None or key not in self.every else self.every
        values = [None] if key is None else order_values(runs[key])
        i = 0 if key is None else next((k for k, v in enumerate(values) if same_value(v, value)), 0)
        return line_style(i, len(values), points)


def left_out(results: Results) -> dict:
    """run_id → "diverged" or "did not learn" for the runs that claim checks leave out: those that
    diverged, and those with two or more records that ended at chance (``store.records.learned``)."""
    counts = results.scalars.groupby("run_id").size() if len(results.scalars) else pd.Series(dtype=int)
    kept = learned(results) if len(counts) else set()
    states = results.runs.set_index("run_id")["state"]
    out = {r: "diverged" for r in states.index if states[r] == "diverged"}
    return out | {r: "did not learn" for r in counts[counts >= 2].index if r not in kept and r not in out}


def select(results: Results, where: dict | None = None, runs=None, **roles) -> Selection:
    """Filter runs by ``where`` ({key: value or list}) and ``runs`` (ids or id prefixes), bind roles.

    :data:`REPLICATE_KEYS` take a role only when it names them; otherwise runs that differ in them
    are replicates, averaged by the figures. Only runs with at least one record are kept (a run
    that failed before its first record has nothing to draw; the report lists it).
    """
    table = results.runs
    if len(results.scalars):
        table = table[table["run_id"].isin(set(results.scalars["run_id"]))]
    else:
        table = table.iloc[0:0]
    every = table
    for name, wanted in (where or {}).items():
        key = resolve_key(results.runs, name)
        table = table[_matches(table[key], wanted)]
        if table.empty:
            values = ", ".join(map(fmt, order_values(results.runs[key])))
            raise PlotError(f"no run with records has {key} = {fmt(wanted)} (values: {values})")
    if runs:
        table = table[_matches(table["run_id"], list(runs), prefix=True)]
    if table.empty:
        raise PlotError("no run with records matches the selection")
    chosen = {role: (resolve_key(table, key) if key else None) for role, key in roles.items()}
    free = [k for k in ordered_keys(varied_keys(table)) if k not in chosen.values() and k not in REPLICATE_KEYS]
    for role, key in chosen.items():
        if key is None and free:
            chosen[role] = free.pop(0)
    if free:
        names = ", ".join(f"{symbol(k)} ({k})" if symbol(k) != k else k for k in free)
        pick = free[0]
        values = ", ".join(map(fmt, order_values(table[pick])))
        raise PlotError(
            f"the runs also differ in {names}: bind it to a role or pick runs with "
            f"where={{{pick!r}: ...}} (CLI: --where {pick}=VALUE; values: {values})"
        )
    return Selection(subset(results, table["run_id"]), chosen, every)


def replicate_table(table: pd.DataFrame, run_ids, column: str, by: str = "epoch") -> pd.DataFrame:
    """``column`` of ``table``'s rows of ``run_ids``: one row per value of ``by``, one column per run."""
    rows = table[table["run_id"].isin(set(run_ids))]
    return rows.pivot(index=by, columns="run_id", values=column).sort_index()


def ordered_keys(keys: list[str]) -> list[str]:
    """``keys`` in :data:`PREFERRED` order (B, μ, λ, ...), then alphabetically."""
    rank = {k: i for i, k in enumerate(PREFERRED)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))


def at_epoch(table: pd.DataFrame, epoch: int | None) -> pd.DataFrame:
    """Rows of each run's last record (``epoch=None``) or of ``epoch``."""
    if epoch is None:
        last = table.groupby("run_id")["epoch"].transform("max")
        return table[table["epoch"] == last]
    rows = table[table["epoch"] == epoch]
    if rows.empty:
        recorded = ", ".join(map(str, sorted(table["epoch"].unique())))
        raise PlotError(f"no record at epoch {epoch} (recorded: {recorded})")
    return rows


def rank_label(selection: Selection, eps: float | None, norm: str | None) -> str:
    """'ε = 0.001' (and the normalization when it is the spectral norm) for an axis label."""
    runs = selection.runs
    eps_values = {eps} if eps is not None else set(runs["record.eps"])
    norms = {norm} if norm is not None else set(runs["record.norm"])
    text = f"ε = {fmt(next(iter(eps_values)))}" if len(eps_values) == 1 else "ε = each run's record.eps"
    if norms != {"fro"}:
        text += ", spectral norm" if norms == {"spectral"} else ", each run's norm"
    return text


def counted_layers(selection: Selection, layers) -> list[str]:
    """Matrix names in index order: ``"counted"`` (in the average rank), ``"all"``, or a list."""
    table = selection.results.layers
    if isinstance(layers, str) and layers not in ("counted", "all"):
        layers = [layers]
    if isinstance(layers, (list, tuple)):
        known = set(table["layer"])
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise PlotError(f"no weight matrix named {unknown[0]!r}; these runs have {', '.join(_in_order(table))}")
        return list(layers)
    if layers == "counted":
        table = table[table["counted"]]
    return _in_order(table)


def _in_order(table: pd.DataFrame) -> list[str]:
    return list(table.sort_values("index")["layer"].drop_duplicates())
