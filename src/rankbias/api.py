"""The Python API: ``train``, ``plan``, ``load_model``, ``spectra`` (``load`` and ``rerank`` read
records back: :mod:`rankbias.store.records`). The CLI calls these and nothing else."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .config import DEFAULT_EPS, ConfigError, RunConfig, flatten
from .data import load_dataset
from .errors import NotFoundError, StoreError
from .models import build_model
from .options import EngineOptions, SweepOptions, split_options
from .store.records import DEFAULT_RESULTS, varied_keys
from .store.run_store import RunStore
from .training.engine import counted_matrices


@dataclass
class RunResult:
    """Where a run's records are and how it ended."""

    run_id: str
    path: Path
    state: str  # done, diverged, failed (or running if interrupted)
    epoch: int | None
    message: str | None
    reused: bool


def train(
    configs: RunConfig | Iterable[RunConfig],
    results: str | Path = DEFAULT_RESULTS,
    *,
    force: bool = False,
    data_root: str | Path | None = None,
    engine: EngineOptions | None = None,
    sweep: SweepOptions | None = None,
    **options,
) -> RunResult | list[RunResult]:
    """Train one run or many, grouping runs that can share a model into cohorts.

    Every config is checked before anything trains (model, data files, batch size against the
    training set, matrix names): bad input raises one :class:`~rankbias.errors.RankbiasError`
    and leaves ``results`` untouched. A run whose results are already stored as done or diverged
    is reused, unless ``force`` (which deletes and retrains it). An interrupted run resumes from
    its last checkpoint. ``data_root``: where data sets are (default ``$RANKBIAS_DATA`` or ./data).

    How runs train is two objects (:mod:`rankbias.options`): ``engine``
    (:class:`~rankbias.options.EngineOptions`: ``device``, ``tf32``, ``cuda_graph``,
    ``fused_update``, ``native``, ``progress``, ``threads``) and ``sweep``
    (:class:`~rankbias.options.SweepOptions`: ``jobs``, ``executor``, ``address``,
    ``max_cohort``, ``memory_cap``, ``fail_fast``, ``log_to``); any of their fields may also be given as a
    keyword (``rb.train(configs, jobs=2, device="cpu")``).

    Sweeps (``docs/sweeps.md``): cohorts are cut to fit ``memory_cap`` bytes and at most
    ``max_cohort`` runs, and trained by ``jobs`` worker processes or Ray tasks, each with
    ``threads`` torch threads (this process's own setting is restored afterwards). A failing
    cohort is recorded as failed and the others go on, unless ``fail_fast``. Each run has one
    writer at a time (a lock file), so concurrent sweeps may share ``results``. On a GPU,
    ``provenance.json`` records whether TensorFloat-32 was allowed.

    >>> import rankbias as rb
    >>> run = rb.train(rb.RunConfig.from_dict({"train": {"epochs": 2}}), "results")  # doctest: +SKIP
    """
    from .sweep import execute

    engine, sweep = split_options(engine, sweep, options)  # bad options stop here, before anything is written
    single = isinstance(configs, RunConfig)
    configs = [configs] if single else list(configs)
    unique = list({c.run_id(): c for c in configs}.values())
    datasets = _check(unique, data_root)
    engine = engine.resolved()
    results = Path(results)
    _check_writable(results)
    trained = execute(unique, results, datasets, engine, sweep, data_root=data_root, force=force)
    out = [_result(results, c, reused=c.run_id() not in trained) for c in configs]
    return out[0] if single else out


def plan(
    configs: Iterable[RunConfig],
    results: str | Path = DEFAULT_RESULTS,
    *,
    force: bool = False,
    data_root: str | Path | None = None,
    engine: EngineOptions | None = None,
    sweep: SweepOptions | None = None,
    **options,
):
    """What :func:`train` would do, without training: a :class:`rankbias.sweep.Plan`."""
    from .sweep import plan_sweep

    engine, sweep = split_options(engine, sweep, options)
    unique = list({c.run_id(): c for c in configs}.values())
    datasets = _check(unique, data_root)
    return plan_sweep(unique, Path(results), datasets, sweep, device=engine.torch_device, force=force)


def _check_writable(results: Path) -> None:
    """One clear error, before any training, when ``results`` cannot be written."""
    probe = results / f".write-probe-{os.getpid()}"
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"cannot write the results directory {results}: {exc.strerror or exc}") from None


def _check(configs: list[RunConfig], data_root) -> dict:
    """Validate what needs the data or the model; load each data set once.

    In a sweep, the first bad run is named by the values of the keys that vary between runs.
    """
    datasets: dict = {}
    for config in configs:
        try:
            _check_one(config, datasets, data_root)
        except ConfigError as exc:
            varied = varied_keys(pd.DataFrame([flatten(c.to_dict()) for c in configs]))
            if not varied:
                raise
            mine = flatten(config.to_dict())
            where = ", ".join(f"{k}={mine[k]!r}" for k in varied)
            raise ConfigError(exc.key, f"{str(exc).split(': ', 1)[-1]} (in the run with {where})") from None
    return datasets


def _check_one(config: RunConfig, datasets: dict, data_root) -> None:
    if config.data not in datasets:
        datasets[config.data] = load_dataset(config.data, data_root)
    data = datasets[config.data]
    side = min(data.input_shape[-2:]) if len(data.input_shape) == 3 else None
    if side is not None and config.augment.crop >= side:
        message = f"{config.augment.crop} is not smaller than the images' side ({side}): crops could miss the image"
        raise ConfigError("augment.crop", message)
    n_train = len(data.x_train)
    if config.train.batch_size > n_train:
        raise ConfigError(
            "train.batch_size", f"{config.train.batch_size} is larger than the training set ({n_train} samples)"
        )
    if isinstance(config.record.layers, tuple):
        with torch.device("meta"):
            model = build_model(config.model, 1, data.input_shape, max(data.num_classes, 1))
        known = counted_matrices(model, "all")
        unmatched = [p for p in config.record.layers if not counted_matrices(model, (p,))]
        if unmatched:
            raise ConfigError(
                "record.layers", f"no weight matrix matches {unmatched[0]!r}; this model has {', '.join(known)}"
            )


def _result(results: Path, config: RunConfig, reused: bool) -> RunResult:
    store = RunStore(results, config.run_id())
    status = store.status() or {}
    return RunResult(
        config.run_id(), store.dir, status.get("state", "missing"), status.get("epoch"), status.get("message"), reused
    )


# -- trained networks --------------------------------------------------------------------------
def load_model(run: str | Path) -> nn.Module:
    """A stored run's network at its last checkpoint, as a plain ``torch.nn.Module`` in eval mode.

    The module takes inputs of shape ``(batch, *input_shape)`` (the data set's, after any padding
    or resizing) and returns ``(batch, outputs)``; its weight matrices have the names of the
    run's ``layers`` records.
    """
    store = RunStore.at(run)
    config, state = store.read_config(), store.load_checkpoint()
    if state is None:
        raise NotFoundError(f"{run} has no checkpoint (the run never reached its first record)")
    with torch.device("meta"):
        cohort = build_model(config.model, 1, tuple(state["input_shape"]), state["n_out"])
    cohort = cohort.to_empty(device="cpu")
    targets = dict(cohort.named_parameters()) | dict(cohort.named_buffers())
    with torch.no_grad():
        for group in ("params", "buffers"):
            for name, value in state[group].items():
                targets[name][0] = value
    return cohort.member_module(0).eval()


# -- spectra of any module ---------------------------------------------------------------------
def spectra(
    module: nn.Module, *, eps: float = DEFAULT_EPS, norm: str = "fro", input_shape: tuple[int, ...] | None = None
) -> pd.DataFrame:
    """Every weight matrix of any ``torch.nn.Module``, one row each (``spectra/modules.py``).

    Linear layers as they are, convolutions as ``(out, in·k1·k2)`` matrices (GSGP Sec. 3),
    ``nn.MultiheadAttention``'s in-projection as its q, k, v matrices. ``m_l`` (the number of
    patches or tokens a matrix is applied to) is traced when ``input_shape`` (one sample, without
    the batch dimension) is given; otherwise 1 for a linear layer and NaN for the others. Every
    other parameter of two or more dimensions gets a row with ``analysed = False`` and the reason.
    A rankbias cohort model gives one row per member and matrix.

    Columns: name, member, kind, shape, m_l, analysed, reason, sv (singular values, float32),
    fro_norm, spectral_norm, eps_rank, stable_rank, effective_rank.
    """
    from .models import CohortModel
    from .spectra.modules import module_spectra

    if isinstance(module, CohortModel):
        parts = [
            module_spectra(module.member_module(r), eps, norm, input_shape).assign(member=r)
            for r in range(module.members)
        ]
        return pd.concat(parts, ignore_index=True)
    return module_spectra(module, eps, norm, input_shape)
