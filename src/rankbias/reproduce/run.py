"""``reproduce(preset_id)``: train a figure's sweep, draw the figure, check its claim.

The runs go to ``<results>/runs/``, one run store for every preset and scale (a directory per
run id: a run that several figures share trains once, and running again reuses finished runs).
Each preset writes ``<results>/<preset>/<scale>/``: ``figure.pdf`` and ``figure.png``
(``figure-<k>.*`` when the runs also differ in keys the figure's roles do not cover: one figure
per combination), ``claim.csv`` (the claim's table) and ``claim.json`` (statement, verdict,
share, its run ids).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import api, plots
from ..config import RunConfig, expand
from ..errors import ConfigError
from ..plots.select import label
from ..store.records import learned, load, subset, varied_keys
from . import catalog, claims

RUNS = "runs"  # the run store under a results folder, shared by every preset and scale
SEEDS = 3  # seeds per configuration (docs/reproduce.md: calibration seeds 0-2, held-out 100-102)
# keys a family draws on its own axis, without a role: CHEN's figure has λ on the x-axis
IMPLICIT = {"weight-decay": (catalog.WD,)}


@dataclass
class Reproduction:
    """What :func:`reproduce` did: the runs, the figure files, the claim's table and verdict."""

    preset: catalog.Preset
    scale: str
    out: Path
    configs: list[RunConfig]
    runs: list[api.RunResult] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    figure_error: str | None = None
    claim: pd.DataFrame | None = None
    verdict: str | None = None  # one of claims.VERDICTS; None for a dry run
    why: str = ""  # one sentence: why the verdict is what it is
    tests: list = field(default_factory=list)  # the statistics behind it (claim.json)
    plan: pd.DataFrame | None = None  # dry run: one row per run
    seconds: float = float("nan")  # training time of the call's sweep (shared by the presets it trained)


def configs(preset_id: str, scale: str = "quick", overrides=(), reading: str | None = None, *, seeds: int = SEEDS,
            first_seed: int = 0) -> list[RunConfig]:
    """The preset's runs at ``scale``: its sweep expanded and validated (``rb.expand``), each
    configuration trained at ``seeds`` seeds ``first_seed`` … ``first_seed + seeds − 1`` (a seed
    sets ``train.seed``, the initialization and data order, and ``data.subset_seed``, the
    training subset), and for a B or μ trend the λ = 0 twin of every run with weight decay (the
    control of :func:`~rankbias.reproduce.claims.trend_verdict`).

    ``reading`` picks one of the preset's ``alternatives`` (e.g. ``"code"``: the authors'
    released code where the text differs); ``overrides`` are ``dotted.key=value`` strings that
    pin a key (a swept key included), applied last.
    """
    preset = catalog.get(preset_id)
    extra = []
    if reading is not None:
        if reading not in preset.alternatives:
            known = ", ".join(preset.alternatives) or "none"
            raise ConfigError("reading", f"{preset_id} has no reading {reading!r}; it has: {known}")
        extra = [f"{key}={json.dumps(value)}" for key, value in preset.alternatives[reading].items()]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("seeds", f"must be a positive number of seeds, got {seeds!r}")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise ConfigError("first_seed", f"must be a seed >= 0, got {first_seed!r}")
    pinned = [o.partition("=")[0] for o in overrides if o.partition("=")[0] in claims.REPLICATE_KEYS]
    if pinned and (seeds > 1 or first_seed):
        raise ConfigError(pinned[0], "is pinned by an override: drop it or the seeds options (they set both seed keys)")
    expanded = expand(preset.config(scale), extra + list(overrides))
    if preset.claim.check == "trend" and preset.claim.knob != catalog.WD:
        expanded += [_with(c, {catalog.WD: 0.0}) for c in expanded if c.optimizer.weight_decay > 0]
    if not pinned:
        expanded = [_with(c, dict.fromkeys(claims.REPLICATE_KEYS, seed)) for c in expanded
                    for seed in range(first_seed, first_seed + seeds)]  # fmt: skip
    return list({c.run_id(): c for c in expanded}.values())


def trained_setup(runs: list[RunConfig]) -> tuple[str, str]:
    """The models and data sets that ``runs`` train, in words (each distinct one once, in order):
    ``("resnet18 (width 8)", "digits 512/256")`` for gsgp-fig1's quick scale."""
    models, data = {}, {}
    for c in runs:
        options = [f"{k} {v}" for k, v in dataclasses.asdict(c.model).items() if k != "name" and v not in (None, False)]
        models[c.model.name + (f" ({', '.join(options)})" if options else "")] = None
        sizes = "" if c.data.train_size is None else f" {c.data.train_size}/{c.data.test_size or 'all'}"
        extra = [f"{k} {getattr(c.data, k)}" for k in ("pad", "resize") if getattr(c.data, k)]
        data[c.data.name + sizes + (f" ({', '.join(extra)})" if extra else "")] = None
    return ", ".join(models), ", ".join(data)


def _with(config: RunConfig, changes: dict) -> RunConfig:
    """``config`` with dotted keys changed."""
    raw = config.to_dict()
    for key, value in changes.items():
        section, _, leaf = key.partition(".")
        raw[section][leaf] = value
    return RunConfig.from_dict(raw)


def reproduce(preset_id: str, scale: str = "quick", results: str | Path = "results", **options) -> Reproduction:
    """Train preset ``preset_id`` at ``scale`` (``quick`` or ``paper``) with ``rb.train``, draw its
    figure with ``rb.plots``, check its claim (:mod:`.claims`); see the module docstring for
    what is written. Every config and data set is checked before anything trains (a missing
    data set raises :class:`~rankbias.errors.DataError`). ``options``: those of
    :func:`reproduce_many` (``jobs``, ``dry_run``, ``overrides``, ``seeds`` ...).
    """
    return reproduce_many([preset_id], scale, results, **options)[0]


def reproduce_many(
    preset_ids,
    scale: str = "quick",
    results: str | Path = "results",
    jobs: int = 1,
    dry_run: bool = False,
    *,
    overrides=(),
    reading: str | None = None,
    device: str = "auto",
    data_root=None,
    progress: bool = False,
    seeds: int = SEEDS,
    first_seed: int = 0,
) -> list[Reproduction]:
    """:func:`reproduce` for several presets, their runs trained as one sweep: a run that several
    presets share trains once, and the cohorts of all presets share the ``jobs`` workers.
    Every preset's configs are expanded and checked before anything trains."""
    results = Path(results)
    runs_dir = results / RUNS
    todo = {
        preset_id: configs(preset_id, scale, overrides, reading, seeds=seeds, first_seed=first_seed)
        for preset_id in preset_ids
    }
    done = [Reproduction(catalog.get(p), scale, results / p / scale, cfgs) for p, cfgs in todo.items()]
    unique = list({c.run_id(): c for cfgs in todo.values() for c in cfgs}.values())
    if dry_run:
        from ..sweep import plan_table

        table = plan_table(api.plan(unique, runs_dir, device=device, data_root=data_root, jobs=jobs), unique, runs_dir)
        for result in done:
            ids = {c.run_id() for c in result.configs}
            result.plan = table[table["run_id"].isin(ids)].dropna(axis=1, how="all").reset_index(drop=True)
        return done
    start = time.perf_counter()
    trained = {
        r.run_id: r
        for r in api.train(unique, runs_dir, jobs=jobs, device=device, data_root=data_root, progress=progress)
    }
    seconds = time.perf_counter() - start
    records = load(runs_dir, runs=trained)
    for result in done:
        result.runs = [trained[c.run_id()] for c in result.configs]
        result.seconds = seconds
        _conclude(result, subset(records, {r.run_id for r in result.runs}))
    return done


def _conclude(result: Reproduction, records) -> None:
    """Draw the figure, check the claim, write ``claim.csv`` and ``claim.json``."""
    preset, out = result.preset, result.out
    out.mkdir(parents=True, exist_ok=True)
    result.figures, result.figure_error = draw(preset, records, out)
    verdict = claims.check(preset.claim, records)
    result.claim, result.verdict, result.why, result.tests = verdict.table, verdict.verdict, verdict.why, verdict.tests
    verdict.table.to_csv(out / "claim.csv", index=False)
    run_ids = [r.run_id for r in result.runs]
    convergence = (
        verdict.convergence.set_index("run_id")
        if len(verdict.convergence)
        else pd.DataFrame(columns=["drift", "converged"])
    )
    summary = {
        "preset": preset.id,
        "paper": preset.paper,
        "scale": result.scale,
        **dict(zip(("model", "data"), trained_setup(result.configs))),
        "claim": preset.claim.statement,
        "check": preset.claim.check,
        "knob": preset.claim.knob,
        "verdict": verdict.verdict,
        "why": verdict.why,
        **_headline(verdict.tests),
        "tests": verdict.tests,
        "min_effect": preset.claim.min_effect,
        "alpha": claims.ALPHA,
        "seeds": sorted({int(c.train.seed) for c in result.configs}),
        "runs": len(result.runs),
        "run_ids": run_ids,
        "convergence": {
            r: {"drift": _number(convergence.at[r, "drift"]), "converged": _flag(convergence.at[r, "converged"])}
            for r in run_ids
            if r in convergence.index
        },
        "not_learned": (
            sorted(set(run_ids) - learned(records)) if preset.claim.check in ("trend", "stable_rank") else []
        ),
        "figures": [str(p) for p in result.figures],
        "figure_error": result.figure_error,
    }
    (out / "claim.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=_number))


HEADLINE = ("statistic", "p", "effect", "ci_low", "ci_high", "control_effect", "control_ci_low", "control_ci_high")


def _headline(tests: list[dict]) -> dict:
    """The first test's numbers at the top of claim.json (the claim's own test; the rest under ``tests``)."""
    first = tests[0] if tests else {}
    return {key: _number(first.get(key)) for key in HEADLINE}


def _number(value):
    """A JSON number, or None for a missing or NaN value."""
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _flag(value):
    return None if value is pd.NA or value is None else bool(value)


def draw(preset: catalog.Preset, records, out: Path) -> tuple[list[Path], str | None]:
    """The preset's figure family with its roles; one figure per combination of the keys that
    vary but no role covers. Returns the files written (PDF and PNG) and the error of a figure
    that could not be drawn (e.g. every run diverged before its first record)."""
    function = plots.FIGURES[preset.family].function
    drawn = records.runs[records.runs["run_id"].isin(set(records.scalars["run_id"]))]
    # the seed keys are covered too: a configuration's seeds make one line, their mean
    covered = {*preset.roles.values(), *IMPLICIT.get(preset.family, ()), *claims.REPLICATE_KEYS}
    extra = [k for k in varied_keys(drawn) if k not in covered]
    slices = [((), drawn)] if not extra else list(drawn.groupby(extra))
    paths = []
    try:
        for k, (values, _) in enumerate(slices):
            where = dict(zip(extra, values if isinstance(values, tuple) else (values,)))
            figure = function(records, where=where or None, **preset.roles)
            if where:  # which slice: e.g. "λ = 0" for a trend's control figure
                figure.suptitle(", ".join(label(key, value) for key, value in where.items()))
            stem = "figure" if len(slices) == 1 else f"figure-{k + 1}"
            paths += [plots.save(figure, out / f"{stem}.{suffix}") for suffix in ("pdf", "png")]
    except plots.PlotError as exc:
        return paths, str(exc)
    return paths, None
