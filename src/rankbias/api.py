"""The Python API: ``train``, ``load``, ``spectra``. The CLI calls these and nothing else."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import ConfigError, RunConfig
from .data import load_dataset
from .models import build_model
from .spectra.measures import NORMS, eps_rank
from .store.run_store import RunStore
from .training.engine import counted_matrices

DEFAULT_RESULTS = Path("results")


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
    device: str = "auto",
    data_root: str | Path | None = None,
    max_cohort: int = 64,
    progress: bool = False,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
    fail_fast: bool = False,
    memory_cap: int | None = None,
    tf32: bool = False,
) -> RunResult | list[RunResult]:
    """Train one run or many, grouping runs that can share a model into cohorts.

    Every config is checked before anything trains (model, data files, batch size against the
    training set, matrix names): bad input raises one :class:`~rankbias.errors.RankbiasError`
    and leaves ``results`` untouched. A run whose results are already stored as done or diverged
    is reused, unless ``force`` (which deletes and retrains it). An interrupted run resumes from
    its last checkpoint.

    Sweeps (``docs/sweeps.md``): cohorts are cut to fit ``memory_cap`` bytes (default: free GPU
    memory, or a share of RAM per worker) and at most ``max_cohort`` runs, and trained by
    ``jobs`` worker processes (``executor="local"``; with one, in this process) or as Ray tasks
    (``executor="ray"``, cluster at ``address`` or ``$RAY_ADDRESS``, else a local one), each
    with ``threads`` torch threads (default 1, see ``sweep.default_threads``; this process's own
    setting is restored afterwards). A failing cohort is recorded as failed and the others go
    on, unless ``fail_fast``. Each run has one writer at a time (a lock file), so concurrent
    sweeps may share ``results``.

    On a GPU each training step is replayed from a CUDA graph where it can be (no dropout, no
    augmentation), and float32 matrix products stay float32 unless ``tf32`` (TensorFloat-32:
    faster, but singular values below ~1e-3 of the largest become noise); ``provenance.json``
    records the choice.

    >>> import rankbias as rb
    >>> run = rb.train(rb.RunConfig.from_dict({"train": {"epochs": 2}}), "results")  # doctest: +SKIP
    """
    from .sweep import default_threads, execute

    default_threads(threads)  # a bad thread count stops here, before anything is written
    single = isinstance(configs, RunConfig)
    configs = [configs] if single else list(configs)
    unique = list({c.run_id(): c for c in configs}.values())
    datasets = _check(unique, data_root)
    torch_device = _device(device)
    results = Path(results)
    _check_writable(results)
    trained = execute(
        unique, results, datasets, device=torch_device, data_root=data_root, force=force, max_cohort=max_cohort,
        jobs=jobs, executor=executor, address=address, threads=threads, fail_fast=fail_fast,
        memory_cap=memory_cap, progress=progress, tf32=tf32,
    )  # fmt: skip
    out = [_result(results, c, reused=c.run_id() not in trained) for c in configs]
    return out[0] if single else out


def plan(
    configs: Iterable[RunConfig],
    results: str | Path = DEFAULT_RESULTS,
    *,
    force: bool = False,
    device: str = "auto",
    data_root: str | Path | None = None,
    max_cohort: int = 64,
    jobs: int = 1,
    memory_cap: int | None = None,
):
    """What :func:`train` would do, without training: a :class:`rankbias.sweep.Plan`."""
    from .sweep import plan_sweep

    unique = list({c.run_id(): c for c in configs}.values())
    datasets = _check(unique, data_root)
    return plan_sweep(unique, Path(results), datasets, force=force, max_cohort=max_cohort, workers=jobs, memory_cap=memory_cap, device=_device(device))


def _check_writable(results: Path) -> None:
    """One clear error, before any training, when ``results`` cannot be written."""
    from .sweep.worker import StoreError

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
            flat = [_flatten(c.to_dict()) for c in configs]
            mine = _flatten(config.to_dict())
            varied = [k for k in mine if len({repr(f[k]) for f in flat}) > 1]
            if not varied:
                raise
            where = ", ".join(f"{k}={mine[k]!r}" for k in varied)
            raise ConfigError(exc.key, f"{str(exc).split(': ', 1)[-1]} (in the run with {where})") from None
    return datasets


def _check_one(config: RunConfig, datasets: dict, data_root) -> None:
    key = _data_key(config)
    if key not in datasets:
        datasets[key] = load_dataset(config.data, data_root)
    n_train = len(datasets[key].x_train)
    if config.train.batch_size > n_train:
        raise ConfigError("train.batch_size", f"{config.train.batch_size} is larger than the training set ({n_train} samples)")
    data = datasets[key]
    if isinstance(config.record.layers, tuple):
        with torch.device("meta"):
            model = build_model(config.model, 1, data.input_shape, max(data.num_classes, 1))
        known = counted_matrices(model, "all")
        unmatched = [p for p in config.record.layers if not counted_matrices(model, (p,))]
        if unmatched:
            raise ConfigError("record.layers", f"no weight matrix matches {unmatched[0]!r}; this model has {', '.join(known)}")


def _data_key(config: RunConfig) -> str:
    return repr(config.data)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", str(exc)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but is not available on this machine")
    return device


def _result(results: Path, config: RunConfig, reused: bool) -> RunResult:
    store = RunStore(results, config.run_id())
    status = store.status() or {}
    return RunResult(config.run_id(), store.dir, status.get("state", "missing"), status.get("epoch"), status.get("message"), reused)


# -- reading results ---------------------------------------------------------------------------
@dataclass
class Results:
    """The records of one or more runs as pandas DataFrames.

    ``runs``: one row per run (run_id, state, and the flattened config: ``optimizer.lr`` ...).
    ``scalars``: one row per run and recorded epoch. ``layers``: per run, epoch and weight matrix.
    ``spectra``: the singular values (``sv``, a float32 array) per run, epoch and matrix.
    ``step_norms``: with ``record.step_norms``, ‖W‖_F after each of the last steps of each
    recorded epoch (run_id, epoch, step, layer, fro_norm); empty otherwise.
    """

    runs: pd.DataFrame
    scalars: pd.DataFrame
    layers: pd.DataFrame
    spectra: pd.DataFrame
    step_norms: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def load(path: str | Path = DEFAULT_RESULTS, *, eps: float | None = None, norm: str | None = None, runs: Iterable[str] | None = None) -> Results:
    """Read a run directory or a results directory of many runs (``runs``: only these run ids).

    With ``eps`` or ``norm``, the ranks (``layers.eps_rank`` and ``scalars.avg_rank``) are
    recomputed from the stored singular values at that threshold, without retraining. Records
    of another schema version raise :class:`~rankbias.store.SchemaError`.
    """
    from .store.catalog import read_tables, run_dirs, runs_table

    dirs = run_dirs(path)
    if runs is not None:
        wanted = set(runs)
        dirs = [d for d in dirs if d.name in wanted]
    tables = read_tables(dirs)
    frames = {name: table.to_pandas() if table is not None else pd.DataFrame() for name, table in tables.items()}
    results = Results(runs_table(dirs), frames["scalars"], frames["layers"], frames["spectra"], frames["step_norms"])
    if eps is not None or norm is not None:
        results = rerank(results, eps, norm)
    return results


def rerank(results: Results, eps: float | None = None, norm: str | None = None) -> Results:
    """Recompute ε-ranks and average ranks from the stored spectra at a new ``eps``/``norm``.

    Vectorized: the spectra of one length and one normalization are stacked into one array and
    thresholded at once (``spectra.measures.eps_rank``, each row at its run's ε, in the same
    precision as a row-by-row computation), so the ranks equal it exactly.
    """
    if norm is not None and norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    runs = results.runs.set_index("run_id")
    layers = results.layers.copy()
    keys = ["run_id", "epoch", "layer"]
    sv = layers[keys].merge(results.spectra[[*keys, "sv"]], on=keys, how="left")["sv"]
    # the recorded computation's precision: a Python float ε is cast to the spectra's float32,
    # a stored ε (float64 in the runs table) promotes the threshold to float64
    weak = type(eps) is float or type(eps) is int
    run_eps = np.full(len(layers), eps, dtype=np.float32 if weak else np.float64) if eps is not None else runs["record.eps"].reindex(layers["run_id"]).to_numpy(np.float64)
    run_norm = np.full(len(layers), norm, dtype=object) if norm is not None else runs["record.norm"].reindex(layers["run_id"]).to_numpy(object)
    lengths = sv.map(len).to_numpy()
    ranks = np.zeros(len(layers), dtype=np.int64)
    for length in np.unique(lengths):
        for kind in NORMS:
            rows = np.flatnonzero((lengths == length) & (run_norm == kind))
            if len(rows):
                stack = np.stack(sv.iloc[rows].to_list()).astype(np.float32, copy=False)
                ranks[rows] = eps_rank(stack, run_eps[rows][:, None], kind)
    layers["eps_rank"] = ranks
    average = layers[layers["counted"]].groupby(["run_id", "epoch"])["eps_rank"].mean().rename("avg_rank")
    scalars = results.scalars.drop(columns="avg_rank").merge(average.reset_index(), on=["run_id", "epoch"], how="left")
    return dataclasses.replace(results, scalars=scalars, layers=layers)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


# -- trained networks --------------------------------------------------------------------------
def load_model(run: str | Path) -> nn.Module:
    """A stored run's network at its last checkpoint, as a plain ``torch.nn.Module`` in eval mode.

    The module takes inputs of shape ``(batch, *input_shape)`` (the data set's, after any padding
    or resizing) and returns ``(batch, outputs)``; its weight matrices have the names of the
    run's ``layers`` records.
    """
    run = Path(run)
    config_path = run / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run} is not a rankbias run directory (no config.json)")
    config = RunConfig.from_dict(_read_json(config_path))
    state = RunStore(run.parent, run.name).load_checkpoint()
    if state is None:
        raise FileNotFoundError(f"{run} has no checkpoint.pt (the run never reached its first record)")
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
def spectra(module: nn.Module, *, eps: float = 1e-3, norm: str = "fro", input_shape: tuple[int, ...] | None = None) -> pd.DataFrame:
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
        parts = [module_spectra(module.member_module(r), eps, norm, input_shape).assign(member=r) for r in range(module.members)]
        return pd.concat(parts, ignore_index=True)
    return module_spectra(module, eps, norm, input_shape)
