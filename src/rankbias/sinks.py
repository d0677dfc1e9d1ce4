"""The records, in the tools people already watch: TensorBoard, W&B, MLflow (docs/track.md).

A *sink* takes a run's records one record at a time (:class:`Sink`: ``open(run_id, config)``,
``log(epoch, scalars, histograms)``, ``close()``). :func:`replay` feeds stored records
(``rb.load``) into one, :func:`export_to` does it for a results folder (``rankbias export RESULTS
OUT --to tensorboard``), and ``rb.Tracker(..., log_to=[("tensorboard", "tb/")])`` logs each record
as it is stored. What one record gives, built in one place (:func:`payload`), step = its epoch:

- scalars: ``avg_rank`` (as stored: the mean ε-rank of the counted matrices),
  ``avg_stable_rank``, ``avg_effective_rank`` (means over the same matrices), and per matrix
  ``eps_rank/<layer>``, ``stable_rank/<layer>``, ``effective_rank/<layer>``; the record's
  ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``batch_loss``, ``lr``, ``step``
  where recorded (NaN, not recorded: not logged), and a tracked run's metrics by their names
  (``metrics/<name>`` where a name is one of the above);
- histograms: ``sv/<layer>``, the matrix's singular values over its Frobenius norm (σ/‖W‖_F),
  64 bins. MLflow has no histograms: it gets the scalars only.

One rankbias run is one run of the tool: TensorBoard a subfolder ``OUT/<run_id>``; W&B one
offline run ``OUT/wandb/offline-run-*-<run_id>`` (id and name the run id, config its flattened
config, project the results folder's name); MLflow one run named by the run id (tag
``rankbias.run_id``, params its config) in an experiment named after the results folder.

**Idempotent.** :meth:`Sink.open` starts the run's copy afresh: an earlier copy of the same run
id in that destination is removed first (TensorBoard: the event files of ``OUT/<run_id>``; W&B:
its offline run folders; MLflow: its runs, deleted, which ``mlflow gc`` purges). Exporting a folder
twice leaves one copy of each run, with its records as they are now.

Each sink imports its package when it is made: a missing one is one
:class:`~rankbias.errors.ConfigError` naming the extra to install (``pip install
'rankbias[wandb]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError

BINS = 64  # a histogram's bins, over the normalized singular values of one matrix
RECORD_SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "lr", "step")
RUN_COLUMNS = ("run_id", "state", "state_epoch", "message", "locked_by")  # the runs table's columns that are not config


@runtime_checkable
class Sink(Protocol):
    """Where the records of one run at a time go: ``open``, ``log`` at each record, ``close``."""

    def open(self, run_id: str, config: dict) -> None:
        """Start the run ``run_id`` (its flattened config: ``{"optimizer.lr": 0.05, ...}``)."""

    def log(self, epoch: int, scalars: dict[str, float], histograms: dict[str, np.ndarray]) -> None:
        """One record: scalar values and arrays of values to draw as histograms, at step ``epoch``."""

    def close(self) -> None:
        """End the run; everything logged is on disk."""


# -- what a record gives -----------------------------------------------------------------------


def payload(
    scalars: Mapping, layers: Iterable[Mapping], spectra: Iterable[Mapping], metrics: Mapping[str, float] | None = None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The scalars and histograms of one record, from its rows: ``scalars`` (the run's row of the
    scalars table at this epoch), ``layers`` and ``spectra`` (its rows of those tables), and the
    tracked run's ``metrics`` (name: value). Values not recorded (NaN, None) are left out."""
    out: dict[str, float] = {}
    if _present(scalars.get("avg_rank")):
        out["avg_rank"] = float(scalars["avg_rank"])
    layers = list(layers)
    counted = [row for row in layers if row["counted"]]
    for measure in ("stable_rank", "effective_rank"):
        values = [float(row[measure]) for row in counted if _present(row[measure])]
        if values:
            out[f"avg_{measure}"] = float(np.mean(values))
    for row in layers:
        for measure in ("eps_rank", "stable_rank", "effective_rank"):
            if _present(row[measure]):
                out[f"{measure}/{row['layer']}"] = float(row[measure])
    for name in RECORD_SCALARS:
        if _present(scalars.get(name)):
            out[name] = float(scalars[name])
    for name, value in (metrics or {}).items():
        if _present(value):
            out[f"metrics/{name}" if name in out or name in RECORD_SCALARS else name] = float(value)
    histograms = {}
    for row in spectra:
        sv = np.asarray(row["sv"], dtype=np.float64)
        fro = math.sqrt(float(np.sum(sv**2)))
        histograms[f"sv/{row['layer']}"] = sv / fro if fro > 0 else sv
    return out, histograms


def replay(records, sink: Sink, runs: Iterable[str] | None = None, before: int | None = None) -> list[str]:
    """Feed stored records (``rb.load(...)``'s :class:`~rankbias.store.records.Results`) into
    ``sink``: for each run (``runs``: only these ids), ``open``, ``log`` at every recorded epoch
    in order (``before``: only the epochs before it), ``close``. Returns the run ids fed."""
    return list(_replay(records, sink, runs, before))


def _replay(records, sink: Sink, runs: Iterable[str] | None, before: int | None):
    """:func:`replay`, yielding each run id once its run is closed."""
    table = records.runs
    if runs is not None:
        table = table[table["run_id"].isin(set(runs))]
    scalars, layers = _by_run(records.scalars), _by_run(records.layers)
    spectra, metrics = _by_run(records.spectra), _by_run(records.metrics)
    for row in table.to_dict("records"):
        run_id = row["run_id"]
        sink.open(run_id, run_config(row))
        try:
            replay_run(sink, scalars.get(run_id), layers.get(run_id), spectra.get(run_id), metrics.get(run_id), before)
        finally:
            sink.close()
        yield run_id


def replay_run(sink: Sink, scalars, layers, spectra, metrics=None, before: int | None = None) -> None:
    """``log`` one opened run's records (its rows of each table, DataFrames) in epoch order."""
    if scalars is None or scalars.empty:
        return
    layer_rows = _by_epoch(layers)
    spectra_rows = _by_epoch(spectra)
    metric_rows = _by_epoch(metrics)
    for row in scalars.sort_values("epoch").to_dict("records"):
        epoch = int(row["epoch"])
        if before is not None and epoch >= before:
            break
        named = {m["name"]: m["value"] for m in metric_rows.get(epoch, [])}
        values, histograms = payload(row, layer_rows.get(epoch, []), spectra_rows.get(epoch, []), named)
        sink.log(epoch, values, histograms)


def run_config(row: Mapping) -> dict:
    """A run's flattened config from its row of the runs table: the keys it sets (a tracked run
    leaves rankbias's other keys missing), values as plain Python (lists, numbers, strings)."""
    return {k: _plain(v) for k, v in row.items() if k not in RUN_COLUMNS and _present(v)}


def export_to(path: str | Path, out: str | Path, to: str) -> list[str]:
    """Every run under ``path`` into the sink ``to`` (tensorboard, wandb, mlflow) at ``out``;
    returns where each run went (a folder, or MLflow's experiment/run). See the module's text."""
    from .store.catalog import run_dirs
    from .store.io import check_output
    from .store.records import load

    if to != "mlflow" or "://" not in str(out):
        out = check_output(out, "out", folder=True)
    sink = make_sink(to, out, group=_group(path, run_dirs(path)), key="to")
    records = load(path)
    return [sink.location for _ in _replay(records, sink, None, None)]


def make_sink(spec, destination: str | Path | None = None, group: str | None = None, key: str = "log_to") -> Sink:
    """A sink from ``spec``: a name of :data:`SINKS` with its ``destination`` (``("tensorboard",
    "tb/")`` as one tuple, too), or an object with ``open``, ``log`` and ``close`` (as it is).
    ``group``: the W&B project / MLflow experiment (default ``rankbias``). A bad spec or a
    missing package is one :class:`ConfigError` (``key``: the option's name)."""
    if isinstance(spec, tuple) and len(spec) == 2 and destination is None:
        spec, destination = spec
    if isinstance(spec, str):
        if spec not in SINKS:
            raise ConfigError(
                key, f"unknown sink {spec!r}: one of {', '.join(SINKS)}, or an object with open/log/close"
            )
        if destination is None or str(destination) == "":
            raise ConfigError(key, f"{spec} needs a destination folder, e.g. ({spec!r}, 'out/{spec}')")
        return SINKS[spec](destination, group=group or "rankbias", key=key)
    if isinstance(spec, Sink):
        return spec
    raise ConfigError(
        key, f"give a sink name and destination, e.g. ('tensorboard', 'tb/'), or a Sink object; got {spec!r}"
    )


def make_sinks(log_to, group: str | None = None, key: str = "log_to") -> list[Sink]:
    """The sinks of ``rb.Tracker(log_to=...)``: None, one spec (a name and destination as a tuple,
    or a Sink object) or a list of them (:func:`make_sink`)."""
    if log_to is None:
        return []
    one = isinstance(log_to, (str, Sink)) or (isinstance(log_to, tuple) and bool(log_to) and isinstance(log_to[0], str))
    return [make_sink(spec, group=group, key=key) for spec in ([log_to] if one else list(log_to))]


def require(module: str, extra: str, key: str = "to"):
    """Import ``module``, or raise one :class:`ConfigError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            key, f"{extra} is not installed: pip install 'rankbias[{extra}]' (or pip install {PACKAGES[extra]})"
        ) from None


# -- the sinks -----------------------------------------------------------------------------------


class TensorBoardSink:
    """Event files in ``logdir/<run_id>/`` (scalars and histograms), written with TensorBoard's
    own event writer (no TensorFlow, no torch needed)."""

    def __init__(self, logdir: str | Path, group: str = "rankbias", key: str = "to"):
        self.logdir = Path(logdir)
        require("tensorboard", "tensorboard", key)
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._writer_class = event_pb2.Event, summary_pb2, EventFileWriter
        self.writer = None
        self.location = ""

    def open(self, run_id: str, config: dict) -> None:
        folder = self.logdir / run_id
        if folder.is_dir():  # an earlier copy of this run: its event files go, any other file stays
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = self._writer_class(str(folder))
        self.location = str(folder)

    def log(self, epoch: int, scalars: dict[str, float], histograms: dict[str, np.ndarray]) -> None:
        s = self._summary
        values = [s.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        for tag, data in histograms.items():
            data = np.asarray(data, dtype=np.float64)
            if data.size == 0:
                continue
            counts, edges = np.histogram(data, bins=BINS)
            histo = s.HistogramProto(
                min=float(data.min()), max=float(data.max()), num=float(data.size), sum=float(data.sum()),
                sum_squares=float(np.dot(data, data)), bucket_limit=edges[1:].tolist(), bucket=counts.tolist(),
            )  # fmt: skip
            values.append(s.Summary.Value(tag=tag, histo=histo))
        self.writer.add_event(self._event(wall_time=time.time(), step=int(epoch), summary=s.Summary(value=values)))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbSink:
    """One offline W&B run per rankbias run in ``directory/wandb/`` (upload later with ``wandb
    sync``): id and name the run id, config its flattened config, project ``group``."""

    def __init__(self, directory: str | Path, group: str = "rankbias", key: str = "to"):
        self.directory = Path(directory)
        self.project = group
        self.wandb = require("wandb", "wandb", key)
        self.run = None
        self.location = ""

    def open(self, run_id: str, config: dict) -> None:
        wandb = self.wandb
        runs = self.directory / "wandb"
        for old in runs.glob(f"offline-run-*-{run_id}"):  # an earlier copy of this run
            shutil.rmtree(old, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            mode="offline", console="off", silent=True, x_disable_stats=True, disable_git=True, save_code=False,
            x_save_requirements=False, disable_job_creation=True,
        )  # fmt: skip
        self.run = wandb.init(
            project=self.project, id=run_id, name=run_id, config=config, dir=str(self.directory),
            settings=settings, reinit="create_new",
        )  # fmt: skip
        self.location = str(self.run.dir).removesuffix("/files")

    def log(self, epoch: int, scalars: dict[str, float], histograms: dict[str, np.ndarray]) -> None:
        data: dict = dict(scalars)
        for tag, values in histograms.items():
            if len(values):
                data[tag] = self.wandb.Histogram(sequence=np.asarray(values, dtype=np.float64), num_bins=BINS)
        self.run.log(data, step=int(epoch))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class MlflowSink:
    """One MLflow run per rankbias run (named by its run id, tag ``rankbias.run_id``, params its
    config) in the experiment ``group``. ``store``: a folder (MLflow's file store) or a tracking
    URI (``sqlite:///...``, ``http://...``), passed to MLflow as it is. Scalars only."""

    PARAM_LENGTH = 6000  # MLflow's limit on a param's value

    def __init__(self, store: str | Path, group: str = "rankbias", key: str = "to"):
        require("mlflow", "mlflow", key)
        text = str(store)
        if "://" in text:
            self.uri = text
        else:
            # MLflow 3 keeps the file store (mlruns folders) behind this switch; rankbias writes one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.uri = Path(text).absolute().as_uri()
        self.store = store
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric, self._param = Metric, Param
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = group
        self.run_id: str | None = None
        self.location = ""

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self.client.create_experiment(self.experiment)

    def open(self, run_id: str, config: dict) -> None:
        experiment = self._experiment_id()
        for old in self.client.search_runs([experiment], filter_string=f"tags.`rankbias.run_id` = '{run_id}'"):
            self.client.delete_run(old.info.run_id)  # an earlier copy of this run
        run = self.client.create_run(experiment, run_name=run_id, tags={"rankbias.run_id": run_id})
        self.run_id = run.info.run_id
        params = [self._param(_mlflow_name(k), str(v)[: self.PARAM_LENGTH]) for k, v in config.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params in one batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        where = Path(self.store) / experiment if self.uri.startswith("file:") else self.experiment  # folder, or name
        self.location = f"{where}/{self.run_id}"

    def log(self, epoch: int, scalars: dict[str, float], histograms: dict[str, np.ndarray]) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(_mlflow_name(k), float(v), now, int(epoch)) for k, v in scalars.items()]
        for start in range(0, len(metrics), 1000):  # and at most 1,000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)
            self.run_id = None


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}
HINTS = {  # what to do with an export (rankbias export prints it)
    "tensorboard": "view: tensorboard --logdir {out}",
    "wandb": "upload: wandb sync {out}/wandb/offline-run-*",
    "mlflow": "view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {out} (the full mlflow package)",
}
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}  # what each extra installs


# -- internals ----------------------------------------------------------------------------------


def _present(value) -> bool:
    """Whether a cell holds a value: not None, NaN or pandas' NA (a list or array always does)."""
    import pandas as pd

    if isinstance(value, (list, tuple, np.ndarray)):
        return True
    return not pd.isna(value)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value


def _by_run(frame) -> dict:
    if frame is None or frame.empty:
        return {}
    return {run_id: rows for run_id, rows in frame.groupby("run_id", sort=False)}


def _by_epoch(frame) -> dict[int, list[dict]]:
    if frame is None or frame.empty:
        return {}
    out: dict[int, list[dict]] = {}
    for row in frame.to_dict("records"):
        out.setdefault(int(row["epoch"]), []).append(row)
    return out


def _mlflow_name(name: str) -> str:
    """MLflow takes letters, digits, ``_ - . / space`` in metric and param names."""
    return re.sub(r"[^\w\-. /]", "_", name)


def _group(path: str | Path, dirs: list[Path]) -> str:
    """The W&B project / MLflow experiment of the runs under ``path``: the results folder's name
    (its parent's, when ``path`` is one run's folder)."""
    path = Path(path).absolute()
    with contextlib.suppress(ValueError):
        if [d.absolute() for d in dirs] == [path]:
            return path.parent.name or "rankbias"
    return path.name or "rankbias"
