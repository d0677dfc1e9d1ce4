"""How runs are trained, as two objects built once (by the CLI or :func:`rankbias.train`) and passed
whole to the sweep, its workers and the engine. Neither changes what a run is: a run's identity
and records come from its :class:`~rankbias.config.RunConfig` alone.

- :class:`EngineOptions`: how one cohort trains (device, fast paths, threads, progress);
- :class:`SweepOptions`: how a sweep's cohorts are cut and spread over workers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a device is resolved: the CLI's readers never load it
    import torch

EXECUTORS = ("local", "ray")


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"`` ... or a ``torch.device``."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", str(exc)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but is not available on this machine")
    return device


@dataclass(frozen=True)
class EngineOptions:
    """How a cohort trains (``training.engine.CohortTrainer``).

    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ... ``tf32``: on a GPU, float32 matrix
    products and convolutions may use TensorFloat-32 (faster; 10-bit mantissa, so singular values
    below ~1e-3 of the largest become noise). ``cuda_graph``: replay each training step from a
    CUDA graph (``None``: whenever the step can be captured: a GPU, no dropout, no augmentation).
    ``fused_update``: apply the linear layers' SGD update inside their backward (``None``: on a
    CPU, see ``engine.FUSED_UPDATE_DEVICES``). ``progress``: a progress bar per cohort.
    ``threads``: torch threads of every training process (``None``: one, see
    :func:`rankbias.sweep.default_threads`). ``native``: how the fully connected families train
    on a CPU: ``None`` (default) with the native step (``rankbias.native``: one C++ call per
    step, built at first use) wherever it runs (the faster path: docs/speed.md), else eagerly;
    ``True`` the same, with a notice for runs it cannot train; ``False`` always eagerly. Without
    a compiler every run trains eagerly (one notice).
    """

    device: str = "auto"
    tf32: bool = False
    cuda_graph: bool | None = None
    fused_update: bool | None = None
    progress: bool = False
    threads: int | None = None
    native: bool | None = None

    def __post_init__(self):
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError("threads", f"must be a whole number of at least 1, got {threads!r}")
        if self.native not in (None, True, False):
            raise ConfigError("native", f"must be true, false or null (the faster path), got {self.native!r}")
        if not isinstance(self.device, str):  # stored as text: the options travel to other processes
            object.__setattr__(self, "device", str(self.device))

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def resolved(self) -> EngineOptions:
        """These options with ``device`` resolved (``auto`` → ``cuda`` or ``cpu``); checks it."""
        return dataclasses.replace(self, device=str(self.torch_device))


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep's runs are cut into cohorts and trained (``docs/sweeps.md``).

    ``jobs``: cohorts trained at once (worker processes, or Ray tasks); ``executor``: ``local``
    (with one job, in this process) or ``ray`` (cluster at ``address``, else ``$RAY_ADDRESS``,
    else a local one). ``max_cohort``: most runs trained together as one model; ``memory_cap``:
    bytes one cohort may use (``None``: free GPU memory, or a share of RAM per worker).
    ``fail_fast``: stop at the first failed cohort (otherwise it is recorded and the others go on).
    ``log_to``: sinks (``("tensorboard", "tb/")``, ``("wandb", "wandb/")``, ``("mlflow", "mlruns/")``:
    ``rankbias.sinks``) that get each run's records when its cohort ends, from this process.
    """

    jobs: int = 1
    executor: str = "local"
    address: str | None = None
    max_cohort: int = 64
    memory_cap: int | None = None
    fail_fast: bool = False
    log_to: tuple = ()

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError("executor", f"must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for key in ("jobs", "max_cohort", "memory_cap"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(key, f"must be a whole number of at least 1, got {value!r}")


def split_options(
    engine: EngineOptions | None, sweep: SweepOptions | None, options: dict
) -> tuple[EngineOptions, SweepOptions]:
    """``engine`` and ``sweep`` with the keyword ``options`` (any field of either) applied."""
    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (EngineOptions, SweepOptions)}
    unknown = set(options) - fields[EngineOptions] - fields[SweepOptions]
    if unknown:
        known = ", ".join(sorted(fields[EngineOptions] | fields[SweepOptions]))
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {known}")
    engine_options = {k: v for k, v in options.items() if k in fields[EngineOptions]}
    sweep_options = {k: v for k, v in options.items() if k in fields[SweepOptions]}
    engine = dataclasses.replace(engine or EngineOptions(), **engine_options)
    sweep = dataclasses.replace(sweep or SweepOptions(), **sweep_options)
    return engine, sweep
