"""Record the low-rank bias of any training loop: ``rb.Tracker`` (docs/track.md).

A tracker measures every weight matrix of a user's ``nn.Module`` the way ``rb.spectra`` does
(linear layers, convolutions as ``(out, in·k·k)``, attention's q, k, v and out) and appends one
record per call to :meth:`Tracker.record`, as one run in the store format that ``rankbias run``
writes: ``config.json`` (a :class:`~rankbias.config.TrackedConfig`: the user's name and settings,
the model's class and size), ``scalars``, ``layers``, ``spectra`` (and ``metrics``: any other
scalar logged), ``status.json``. So ``rb.load``, ``rankbias show/status/report/plot/query/export``
and the record-based theory checks read it unchanged.

It never changes the model or its training: singular values are computed under ``no_grad`` from
detached weights, on the weights' device, batched over matrices of one shape; nothing is kept on
the model (the tracker keeps a copy of the last recorded matrices, for ‖W_t − W_{t−1}‖).

Safe to kill at any point: every file is written whole (renamed into place), a record's
``scalars`` file last, so a record without it is unfinished and dropped when the run is opened
again. The run is found again by its name, settings and model class (its run id): recording an
epoch at or before one already recorded (a loop restarted from its own checkpoint, or from the
start) replaces the records from that epoch on, so each epoch is stored once.
"""

from __future__ import annotations

import fnmatch
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_EPS, RecordConfig, TrackedConfig, flatten
from .errors import ConfigError, StoreError
from .options import EngineOptions
from .sinks import make_sinks, payload, replay_run, run_config
from .spectra.measures import rank_measures
from .spectra.modules import patch_counts, weight_matrices
from .store import provenance
from .store.io import writing
from .store.lock import RunLock, lock_owner
from .store.records import load
from .store.run_store import RunStore
from .store.schema import table

# record() arguments that are columns of the scalars table; any other number goes to ``metrics``
SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "lr")


class Tracker:
    """Records of any ``model``'s weight matrices during a training loop the user writes.

    ``results``: the results folder (the run is ``results/<run_id>/``); ``name`` and ``config``
    (the user's settings, nested or dotted: ``{"optimizer.lr": 0.1, "train.batch_size": 32}``)
    identify the run; ``layers``: glob patterns of the matrices recorded (default all);
    ``counted``: those in ``avg_rank`` (``"all"`` or patterns); ``eps``/``norm``: the rank
    threshold (any other can be read later, from the stored singular values);
    ``input_shape``: one sample's shape, to count each layer's input patches m_l (GSGP) with one
    forward pass on zeros at the start; without it m_l is 1 for linear layers and unknown for
    convolutions. ``log_to``: sinks that get each record once it is stored (docs/track.md,
    ``rankbias.sinks``): ``("tensorboard", "tb/")``, ``("wandb", "wandb/")``,
    ``("mlflow", "mlruns/")`` or objects with ``open``/``log``/``close``, one or a list.
    Use it as a context manager, or call :meth:`close` at the end.

    >>> with rb.Tracker(model, "results", name="my-resnet", config={"optimizer.lr": 0.1}) as tracker:
    ...     for epoch in range(epochs):
    ...         train_one_epoch(model)
    ...         tracker.record(epoch=epoch + 1, train_loss=loss, test_acc=acc)
    """

    def __init__(
        self,
        model: nn.Module,
        results: str | Path = "results",
        *,
        name: str = "run",
        config: dict | None = None,
        layers: str | Iterable[str] = "*",
        counted: str | Iterable[str] = "all",
        eps: float = DEFAULT_EPS,
        norm: str = "fro",
        input_shape: tuple[int, ...] | None = None,
        log_to=None,
    ):
        if not isinstance(model, nn.Module):
            raise ConfigError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
        patterns = (layers,) if isinstance(layers, str) else tuple(layers)
        found, self.skipped = weight_matrices(model)
        self.matrices = [(n, k, m) for n, k, _, m in found if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not self.matrices:
            known = ", ".join(n for n, *_ in found[:8]) or "none"
            raise ConfigError("layers", f"no weight matrix matches {list(patterns)} (the model's: {known})")
        counting = "all" if counted == "all" else ((counted,) if isinstance(counted, str) else tuple(counted))
        record = RecordConfig(eps=eps, norm=norm, layers=counting)
        module = f"{type(model).__module__}.{type(model).__qualname__}"
        size = sum(p.numel() for p in model.parameters())
        self.config = TrackedConfig(name, module, size, config or {}, record)
        self.model = model
        self.results = Path(results)
        self.store = RunStore(self.results, self.config.run_id())
        self.m_l = patch_counts(model, input_shape) if input_shape is not None else {}
        self.previous: dict[str, torch.Tensor] = {}
        group = self.results.absolute().name or "rankbias"  # the W&B project, MLflow experiment
        self.sinks = make_sinks(log_to, group=group)  # a missing package fails here, before any record
        self.logged: dict[int, int] = {}  # sink index: the last epoch it got
        self.failed: set[int] = set()
        self.last = self._open()
        self.opened_at = self.last

    @property
    def run_id(self) -> str:
        return self.store.run_id

    @property
    def path(self) -> Path:
        return self.store.dir

    def _open(self) -> int:
        """Take the run's lock, write its config, and make its stored records ready to be appended
        to: merged tables back into per-epoch files, an unfinished record dropped. Returns the
        last recorded epoch (-1: none)."""
        with writing(self.results):
            self.store.dir.mkdir(parents=True, exist_ok=True)
            self.lock = RunLock(self.store.dir)
            if not self.lock.acquire():
                owner = lock_owner(self.store.dir) or {}
                raise StoreError(f"{self.store.dir} is being recorded by another process "
                                 f"(pid {owner.get('pid')} on {owner.get('host')})")  # fmt: skip
            self.store.write_config(self.config.to_dict())
            parameter = next(self.model.parameters(), None)
            device = str(parameter.device) if parameter is not None else "cpu"
            provenance.start(self.store.dir, EngineOptions(device=device, threads=torch.get_num_threads()))
            self.store.split()
            finished = self.store.part_epochs("scalars")
            started = set().union(*(self.store.part_epochs(n) for n in ("layers", "spectra", "metrics")))
            self.store.drop_epochs(started - finished)
        return max(finished, default=-1)

    @torch.no_grad()
    def record(self, epoch: int, step: int | None = None, **scalars: float) -> None:
        """Measure every recorded matrix now and store it as the record of ``epoch``, with
        ``step`` and the scalars given (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``,
        ``batch_loss``, ``lr`` are columns of ``scalars``; any other name goes to ``metrics``).
        An ``epoch`` at or before the last one recorded replaces the records from it on."""
        start = time.perf_counter()
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError("epoch", f"must be a whole number >= 0, got {epoch!r}")
        values = {k: _number(k, v) for k, v in scalars.items()}
        epoch = int(epoch)
        if epoch <= self.last:
            with writing(self.results):
                self.store.drop_after(epoch - 1)
            self.previous = {}
        layers, spectra = self._measure(epoch)
        spectra_seconds = time.perf_counter() - start
        counted = [row["eps_rank"] for row in layers if row["counted"]]
        row = {name: values.pop(name, math.nan) for name in SCALARS}
        row |= {
            "run_id": self.run_id, "epoch": epoch, "step": step,
            "avg_rank": float(np.mean(counted)) if counted else math.nan, "distance": math.nan,
            "epoch_seconds": math.nan, "spectra_seconds": spectra_seconds,
        }  # fmt: skip
        metrics = [{"run_id": self.run_id, "epoch": epoch, "name": k, "value": v} for k, v in values.items()]
        tables = {"layers": table("layers", layers), "spectra": table("spectra", spectra)}
        if metrics:
            tables["metrics"] = table("metrics", metrics)
        with writing(self.results):
            self.store.append(epoch, tables)
            row["record_seconds"] = time.perf_counter() - start
            self.store.append(epoch, {"scalars": table("scalars", [row])})  # last: the record is complete
            self.store.set_status("running", epoch)
        self.last = epoch
        if self.sinks:
            self._log(epoch, row, values, layers, spectra)

    def _log(self, epoch: int, row: dict, metrics: dict, layers: list[dict], spectra: list[dict]) -> None:
        """The stored record to every sink. A sink's copy of the run is rewritten from the store
        (opened afresh, the stored records before ``epoch`` replayed) at its first record and
        whenever a record replaces earlier ones, so it holds what the store holds. A sink that
        fails is warned about once and not used again: the record is stored, and ``rankbias
        export`` writes it there later; a logging backend never stops the training loop."""
        scalars, histograms = payload(row, layers, spectra, metrics)
        for i, sink in enumerate(self.sinks):
            if i in self.failed:
                continue
            try:
                logged = self.logged.get(i)
                if logged is None or epoch <= logged:
                    if logged is not None:
                        sink.close()
                    sink.open(self.run_id, run_config(flatten(self.config.to_dict())))
                    if epoch > 0 and (self.opened_at >= 0 or logged is not None):
                        stored = load(self.path)
                        replay_run(sink, stored.scalars, stored.layers, stored.spectra, stored.metrics, before=epoch)
                sink.log(epoch, scalars, histograms)
                self.logged[i] = epoch
            except Exception as exc:  # noqa: BLE001 - any backend's failure: the record is already stored
                self.failed.add(i)
                warnings.warn(
                    f"log_to: {type(sink).__name__} failed at epoch {epoch} ({type(exc).__name__}: {exc}); this "
                    f"tracker stops logging to it. The record is stored: rankbias export {self.path} OUT --to ... "
                    "writes every record there later",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def _close_sinks(self) -> None:
        for i in list(self.logged):
            self.logged.pop(i)
            if i in self.failed:
                continue
            try:
                self.sinks[i].close()
            except Exception as exc:  # noqa: BLE001 - as in _log
                self.failed.add(i)
                warnings.warn(f"log_to: {type(self.sinks[i]).__name__} failed to close ({exc})", RuntimeWarning, 2)

    def _measure(self, epoch: int) -> tuple[list[dict], list[dict]]:
        """Rows of ``layers`` and ``spectra``: singular values batched over matrices of one shape,
        on the weights' device."""
        by_shape: dict[tuple, list[int]] = {}
        for i, (_, _, matrix) in enumerate(self.matrices):
            by_shape.setdefault((tuple(matrix.shape), matrix.device), []).append(i)
        sv: dict[int, torch.Tensor] = {}
        for indices in by_shape.values():
            stack = torch.stack([self.matrices[i][2].detach().float() for i in indices])  # (n, rows, cols)
            for i, values in zip(indices, torch.linalg.svdvals(stack).cpu()):
                sv[i] = values
        record = self.config.record
        layers, spectra = [], []
        for i, (name, kind, matrix) in enumerate(self.matrices):
            current = matrix.detach().float().cpu()
            measures = {k: float(v) for k, v in rank_measures(sv[i], record.eps, record.norm).items()}
            before = self.previous.get(name)
            delta = float((current - before).norm()) if before is not None else math.nan
            ratio = math.nan
            if before is not None and measures["fro_norm"]:
                ratio = float(before.norm()) / measures["fro_norm"]  # ‖W_{t−1}‖ / ‖W_t‖, as the engine
            self.previous[name] = current
            layers.append({
                "run_id": self.run_id, "epoch": epoch, "layer": name, "index": i,
                "rows": int(matrix.shape[0]), "cols": int(matrix.shape[1]), "m_l": self._m_l(name, kind),
                "counted": record.layers == "all" or any(fnmatch.fnmatchcase(name, p) for p in record.layers),
                **measures, "eps_rank": int(measures["eps_rank"]), "delta_fro": delta, "norm_ratio": ratio,
            })  # fmt: skip
            spectra.append({"run_id": self.run_id, "epoch": epoch, "layer": name, "sv": sv[i].numpy()})
        return layers, spectra

    def _m_l(self, name: str, kind: str) -> int | None:
        layer = name.rpartition(".")[0] if kind == "attention" else name  # an attention's m_l: its tokens
        return self.m_l.get(layer, 1 if kind == "linear" else None)

    def close(self, state: str = "done", message: str | None = None) -> None:
        """End the run: its records merged into one file per table, its status ``state`` (done,
        or failed with ``message``), its lock released, its sinks closed. A closed run opened again goes on."""
        self._close_sinks()
        if self.lock is None:
            return
        try:
            with writing(self.results):
                if self.last >= 0:
                    self.store.compact()
                    self.store.set_status(state, self.last, message)
                provenance.finish(self.store.dir, state)
        finally:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Tracker:  # noqa: PYI034
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if exc is None:
            self.close()
        else:
            self.close("failed", f"{kind.__name__}: {exc}")


def _number(name: str, value) -> float:
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(name, f"a recorded scalar must be a number, got {type(value).__name__}") from None

