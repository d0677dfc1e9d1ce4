"""Every check that applies to a stored run or a sweep; the gradient-rank check of a config."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import RunConfig, load_configs
from ..data import load_dataset
from ..errors import ConfigError
from ..models import plain_model
from ..store.run_store import RunStore, is_run
from ..training.losses import output_size
from ._common import table
from .chen import chen_theorem_2_6
from .gp import gp_theorem_1, sgd_noise
from .gradients import gradient_rank
from .gsgp import STEP_NORMS_HINT, THEOREM_3_3_EPS, lemma_3_2, theorem_3_3
from .live import live_run, random_batches


def gradient_rank_at(source: str | Path | RunConfig, samples: int = 32, *, data_root=None, seed: int = 0,
                     rtol: float | None = None, device="cpu") -> pd.DataFrame:
    """:func:`~rankbias.theory.gradient_rank` on ``samples`` random training samples, for the
    network of ``source``: a stored run's directory (its last checkpoint), or a config (a
    :class:`RunConfig` or a YAML file of one run: the network at initialization, seeded with
    ``train.seed``). GP Lemma 2's batches have the config's batch size (at most ``samples``)."""
    if isinstance(source, (str, Path)) and is_run(source):
        live = live_run(source, data_root)
        config, model, data, run_id, epoch = live.config, live.model, live.data, live.run_id, live.epoch
    else:
        config = source if isinstance(source, RunConfig) else _single_config(source)
        data = load_dataset(config.data, data_root)
        n_out = output_size(config.loss, data.num_classes)
        model = plain_model(config.model, data.input_shape, n_out, seed=config.train.seed)
        run_id, epoch = config.run_id(), 0
    if samples < 1:
        raise ConfigError("samples", f"must be at least 1, got {samples}")
    (index,) = random_batches(len(data.x_train), min(samples, len(data.x_train)), 1, seed)
    return gradient_rank(model, data.x_train[index], data.y_train[index], config.loss,
                         batch_size=min(config.train.batch_size, len(index)), rtol=rtol, device=device,
                         run_id=run_id, epoch=epoch)


def _single_config(path) -> RunConfig:
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError("sweep", f"{path} describes {len(configs)} runs; the gradient-rank check takes one")
    return configs[0]


def check_run(path: str | Path, *, eps=THEOREM_3_3_EPS, n=None, samples: int = 32, batches: int = 16, data_root=None,
              models: bool = True, device="cpu") -> pd.DataFrame:
    """All checks that apply, as one table (the ``rankbias theory`` command).

    On a run directory: GSGP Theorem 3.3 over ``eps``, Lemma 3.2 (when the run recorded step
    norms; otherwise one row saying how to record them), GP's SGD noise, and — with ``models``
    — the gradient-rank lemmas on ``samples`` samples, GP Theorem 1 over ``batches`` batches
    and CHEN's Assumption 2.5 / Theorem 2.6 on the run's last checkpoint, on ``device``. On a directory of
    runs: the record-based checks of every run (Prediction 4.1 is :func:`prediction_4_1`).
    """
    from ..store.records import load

    path = Path(path)
    parts = [record_checks(load(path), eps=eps, n=n)]
    single = is_run(path) and not RunStore.at(path).is_tracked()  # a tracked run stores no network
    if single and models:
        parts += [gradient_rank_at(path, samples, data_root=data_root, device=device),
                  gp_theorem_1(path, batches=batches, data_root=data_root, device=device),
                  chen_theorem_2_6(path, batches=batches, data_root=data_root, device=device)]
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def record_checks(results, *, eps=THEOREM_3_3_EPS, n=None) -> pd.DataFrame:
    """The checks that read the stored records only (no network, no gradient): GSGP Theorem 3.3
    over ``eps``, Lemma 3.2 (when ``results.step_norms`` has rows; otherwise one row per run
    saying how to record them) and GP's SGD noise, as one table (used by :func:`check_run` and
    the HTML report). Runs without the settings the checks need (recorded by ``rb.Tracker``
    without them: :data:`SETTINGS`) get one row saying what to give instead."""
    results, not_checkable = checkable(results)
    if results.runs.empty:
        return table(not_checkable)
    parts = [theorem_3_3(results, eps)]
    step_norms = getattr(results, "step_norms", None)
    if step_norms is not None and len(step_norms):
        parts.append(lemma_3_2(results, n))
    else:
        not_recorded = [
            {"check": "gsgp_lemma_3_2", "run_id": r, "note": f"not recorded: {STEP_NORMS_HINT}"}
            for r in results.runs["run_id"]
        ]
        parts.append(table(not_recorded))
    parts += [sgd_noise(results), table(not_checkable)]
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


# what the record checks read of a run besides its records (a run of `rankbias run` has them all)
SETTINGS = ("optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "train.batch_size")


def checkable(results) -> tuple[object, list[dict]]:
    """``results`` without the runs that lack :data:`SETTINGS` or a recorded ``step``, and a
    row for each of those saying what its ``rb.Tracker`` should be given."""
    from ..store.records import subset

    rows, keep = [], []
    scalars = results.scalars
    steps = scalars.groupby("run_id")["step"].apply(lambda s: s.notna().all()) if "step" in scalars else {}
    for run in results.runs.itertuples(index=False):
        settings = dict(zip(results.runs.columns, run))
        missing = [k for k in SETTINGS if pd.isna(settings.get(k))]
        if not steps.get(settings["run_id"], True):
            missing.append("step (tracker.record(step=...))")
        if missing:
            note = f"not checked: the run's config lacks {', '.join(missing)} (give them to rb.Tracker; docs/track.md)"
            rows.append({"check": "record_checks", "run_id": settings["run_id"], "note": note})
        else:
            keep.append(settings["run_id"])
    return (subset(results, keep) if rows else results), rows
