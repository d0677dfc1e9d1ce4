"""The Python API: ``train``, ``load``, ``spectra``. The CLI calls these and nothing else."""

from __future__ import annotations

import json
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
from .spectra.measures import NORMS, rank_measures, singular_values
from .store.run_store import RunStore
from .training.engine import CohortTrainer, Member, checkpoint_epoch, counted_matrices

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
) -> RunResult | list[RunResult]:
    """Train one run or many, grouping runs that can share a model into cohorts.

    Every config is checked before anything trains (model, data files, batch size against the
    training set, matrix names): bad input raises one :class:`~rankbias.errors.RankbiasError`
    and leaves ``results`` untouched. A run whose results are already stored as done or diverged
    is reused, unless ``force`` (which deletes and retrains it). An interrupted run resumes from
    its last checkpoint.

    >>> import rankbias as rb
    >>> run = rb.train(rb.RunConfig.from_dict({"train": {"epochs": 2}}), "results")  # doctest: +SKIP
    """
    single = isinstance(configs, RunConfig)
    configs = [configs] if single else list(configs)
    unique = list({c.run_id(): c for c in configs}.values())
    datasets = _check(unique, data_root)
    torch_device = _device(device)
    results = Path(results)

    pending: dict[tuple, list[Member]] = {}
    for config in unique:
        store = RunStore(results, config.run_id())
        status = store.status()
        if status and status["state"] in ("done", "diverged") and not force:
            continue
        if force:
            store.remove()
        key = (config.cohort_key(), checkpoint_epoch(store))
        pending.setdefault(key, []).append(Member(config, store))

    for members in pending.values():
        data = datasets[_data_key(members[0].config)]
        for start in range(0, len(members), max_cohort):
            chunk = members[start : start + max_cohort]
            try:
                CohortTrainer(chunk, data, torch_device, progress=progress).run()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a failure of this cohort is recorded; the others go on  # noqa: BLE001
                for m in chunk:
                    status = m.store.status()
                    if status is None:  # failed before its first record
                        m.store.write_config(m.config.to_dict())
                    if status is None or status["state"] == "running":
                        epoch = status["epoch"] if status else None
                        m.store.set_status("failed", epoch, f"{type(exc).__name__}: {exc}")

    trained = {m.store.run_id for members in pending.values() for m in members}
    out = [_result(results, c, reused=c.run_id() not in trained) for c in configs]
    return out[0] if single else out


def _check(configs: list[RunConfig], data_root) -> dict:
    """Validate what needs the data or the model; load each data set once."""
    datasets = {}
    for config in configs:
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
            unknown = [n for n in config.record.layers if n not in known]
            if unknown:
                raise ConfigError("record.layers", f"no weight matrix named {unknown[0]!r}; this model has {', '.join(known)}")
    return datasets


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
    """

    runs: pd.DataFrame
    scalars: pd.DataFrame
    layers: pd.DataFrame
    spectra: pd.DataFrame


def load(path: str | Path = DEFAULT_RESULTS, *, eps: float | None = None, norm: str | None = None) -> Results:
    """Read a run directory or a results directory of many runs.

    With ``eps`` or ``norm``, the ranks (``layers.eps_rank`` and ``scalars.avg_rank``) are
    recomputed from the stored singular values at that threshold, without retraining.
    """
    path = Path(path)
    run_dirs = [path] if (path / "config.json").exists() else sorted(p.parent for p in path.glob("*/config.json"))
    if not run_dirs:
        raise FileNotFoundError(f"no rankbias runs under {path}")
    runs, tables = [], {"scalars": [], "layers": [], "spectra": []}
    for run_dir in run_dirs:
        store = RunStore(run_dir.parent, run_dir.name)
        config = RunConfig.from_dict(_read_json(run_dir / "config.json"))
        status = store.status() or {}
        runs.append({"run_id": run_dir.name, "state": status.get("state"), "state_epoch": status.get("epoch"), "message": status.get("message"), **_flatten(config.to_dict())})
        for name, parts in tables.items():
            table = store.read(name)
            if table is not None:
                parts.append(table.to_pandas())
    frames = {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for name, parts in tables.items()}
    results = Results(pd.DataFrame(runs), frames["scalars"], frames["layers"], frames["spectra"])
    if eps is not None or norm is not None:
        results = rerank(results, eps, norm)
    return results


def rerank(results: Results, eps: float | None = None, norm: str | None = None) -> Results:
    """Recompute ε-ranks and average ranks from the stored spectra at a new ``eps``/``norm``."""
    if norm is not None and norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    runs = results.runs.set_index("run_id")
    layers = results.layers.copy()
    spectra = results.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    ranks = []
    for run_id, epoch, layer in zip(layers["run_id"], layers["epoch"], layers["layer"]):
        run_eps = eps if eps is not None else runs.at[run_id, "record.eps"]
        run_norm = norm if norm is not None else runs.at[run_id, "record.norm"]
        ranks.append(int(rank_measures(np.asarray(spectra.at[(run_id, epoch, layer)]), run_eps, run_norm)["eps_rank"]))
    layers["eps_rank"] = ranks
    average = layers[layers["counted"]].groupby(["run_id", "epoch"])["eps_rank"].mean().rename("avg_rank")
    scalars = results.scalars.drop(columns="avg_rank").merge(average.reset_index(), on=["run_id", "epoch"], how="left")
    return Results(results.runs, scalars, layers, results.spectra)


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
    """Every weight matrix of any ``torch.nn.Module``, one row each.

    Weight matrices are the weights of ``nn.Linear`` (as is) and of convolutions (reshaped to
    ``(out, in·k1·k2)``, GSGP Sec. 3). ``m_l`` is 1 for a linear layer and, for a convolution, the
    number of output positions — known only when ``input_shape`` (one sample, without the batch
    dimension) is given, else NaN. A rankbias cohort model gives one row per member and matrix.

    Columns: name, member, shape, m_l, sv (singular values, float32), fro_norm, spectral_norm,
    eps_rank, stable_rank, effective_rank.
    """
    from .models import CohortModel

    if isinstance(module, CohortModel):
        parts = [spectra(module.member_module(r), eps=eps, norm=norm).assign(member=r) for r in range(module.members)]
        return pd.concat(parts, ignore_index=True)
    patches = _patch_counts(module, input_shape) if input_shape is not None else {}
    rows = []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear):
            matrix, m_l = layer.weight, 1
        elif isinstance(layer, nn.modules.conv._ConvNd):
            matrix, m_l = layer.weight.flatten(1), patches.get(name, float("nan"))
        else:
            continue
        sv = singular_values(matrix.detach())
        values = {k: float(v) for k, v in rank_measures(sv, eps, norm).items()}
        rows.append({"name": name, "member": 0, "shape": tuple(matrix.shape), "m_l": m_l, "sv": sv.cpu().numpy(), **values})
    columns = ["name", "member", "shape", "m_l", "sv", "fro_norm", "spectral_norm", "eps_rank", "stable_rank", "effective_rank"]
    return pd.DataFrame(rows, columns=columns)


def _patch_counts(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions of each convolution for one input of ``input_shape`` (forward hooks)."""
    counts, hooks = {}, []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            hooks.append(layer.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(name, int(np.prod(o.shape[2:])))))
    param = next(module.parameters(), None)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu"))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return counts
