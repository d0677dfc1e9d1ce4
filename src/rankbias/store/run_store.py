"""On-disk layout of one run, written by one writer.

``results/<run_id>/``::

    config.json          the resolved config (RunConfig.to_dict)
    status.json          {"state": running|done|diverged|failed, "epoch": k, "message": ...}
    checkpoint.pt        the member's training state at its last recorded epoch
    scalars/e000012.parquet   one file per recorded epoch while running ...
    layers/...  spectra/...
    scalars.parquet      ... merged into one file per table when the run ends

Every file is written to a temporary name and renamed, so a killed run leaves whole files. The
checkpoint is written after the epoch's records, so on resume any record newer than the
checkpoint is dropped and recomputed.

Every Parquet file carries the records' layout version in its key-value metadata (``schema.py``).
``run.lock`` (see ``lock.py``) and ``provenance.json`` (see ``provenance.py``) sit beside the records.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, DamagedError, NotFoundError
from .io import replace_from, write_text, writing
from .lock import LOCK_NAME
from .schema import SCHEMA_KEY, SCHEMA_VERSION, TABLES, check_schema, schema_of

CONFIG, STATUS, CHECKPOINT = "config.json", "status.json", "checkpoint.pt"
STATES = ("running", "done", "diverged", "failed")
COMPRESS = "compress"  # compressed copies of the network (rankbias.compress)
def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it has a stored config)."""
    return (Path(path) / CONFIG).exists()


def starting_runs(results: str | Path) -> int:
    """Run directories under ``results`` locked by a trainer that has not written their config yet."""
    results = Path(results)
    return sum(1 for p in results.glob(f"*/{LOCK_NAME}") if not is_run(p.parent)) if results.is_dir() else 0


class RunStore:
    """One run's directory: ``RunStore(results, run_id)``, or ``RunStore.at(run_dir)``."""

    def __init__(self, root: str | Path, run_id: str):
        self.run_id = run_id
        self.dir = Path(root) / run_id

    @classmethod
    def at(cls, run_dir: str | Path) -> RunStore:
        run_dir = Path(run_dir)
        return cls(run_dir.parent, run_dir.name)

    @property
    def compress_dir(self) -> Path:
        """Where :mod:`rankbias.compress` stores what it measured on this run's network."""
        return self.dir / COMPRESS

    # -- status and config ------------------------------------------------------------------
    def status(self) -> dict | None:
        """``{"state", "epoch", "message", "time"}``, None before the first record; a
        :class:`DamagedError` naming the file when it is not such a mapping."""
        path = self.dir / STATUS
        if not path.exists():
            return None
        status = _read_json(path)
        if not isinstance(status, dict) or status.get("state") not in STATES:
            raise DamagedError(f"{path}: not a run status ({str(status)[:60]!r})")
        return status

    def set_status(self, state: str, epoch: int | None = None, message: str | None = None) -> None:
        status = {"state": state, "epoch": epoch, "message": message, "time": time.time()}
        write_text(self.dir / STATUS, json.dumps(status))

    def write_config(self, config: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / CONFIG, json.dumps(config, indent=2, sort_keys=True))

    def read_config(self):
        """The run's :class:`~rankbias.config.RunConfig` (a :class:`~rankbias.config.TrackedConfig`
        for a run recorded by ``rb.Tracker``); ``NotFoundError`` when this is not a run."""

        path = self.dir / CONFIG
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFoundError(f"{self.dir} is not a rankbias run directory (no {CONFIG})") from None
        return _config_at(str(path), stat.st_mtime_ns, stat.st_size)

    def is_tracked(self) -> bool:
        """Whether ``rb.Tracker`` recorded this run (a user's loop: no network is stored)."""
        from ..config import TrackedConfig

        return isinstance(self.read_config(), TrackedConfig)

    def remove(self) -> None:
        """Delete the run's files, except its lock (held by whoever removes it)."""
        if not self.dir.exists():
            return
        for path in self.dir.iterdir():
            if path.name == LOCK_NAME:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # -- records ----------------------------------------------------------------------------
    def append(self, epoch: int, tables: dict[str, pa.Table]) -> None:
        for name, table in tables.items():
            folder = self.dir / name
            folder.mkdir(parents=True, exist_ok=True)
            _write_parquet(table, folder / f"e{epoch:06d}.parquet")

    def drop_after(self, epoch: int) -> None:
        """Remove records of epochs after ``epoch`` (written after the last checkpoint)."""
        for name in TABLES:
            for path in (self.dir / name).glob("e*.parquet"):
                if int(path.stem[1:]) > epoch:
                    path.unlink()

    def compact(self) -> None:
        """Merge each table's per-epoch files into ``<table>.parquet`` and remove them.

        The merged file is complete (renamed into place) before any part is removed, so a reader
        that listed the parts and finds one gone lists again and finds the merged file."""
        for name in TABLES:
            folder = self.dir / name
            parts = sorted(folder.glob("e*.parquet"))
            if parts:
                _write_parquet(pa.concat_tables(pq.read_table(p) for p in parts), self.dir / f"{name}.parquet")
            shutil.rmtree(folder, ignore_errors=True)

    def split(self) -> None:
        """Undo :meth:`compact`: each merged table back into per-epoch files, for a run that goes
        on (``rb.Tracker`` reopening a finished run). Every part is written before the merged file
        is removed, so a reader sees the merged file or all the parts."""
        for name in TABLES:
            merged = self.dir / f"{name}.parquet"
            if not merged.exists():
                continue
            table = pq.read_table(merged)
            epochs = table.column("epoch").to_pylist()
            for epoch in sorted(set(epochs)):
                rows = [i for i, e in enumerate(epochs) if e == epoch]
                self.append(epoch, {name: table.take(rows)})
            merged.unlink()

    def part_epochs(self, name: str) -> set[int]:
        """The epochs of table ``name``'s per-epoch files."""
        return {int(p.stem[1:]) for p in (self.dir / name).glob("e*.parquet")}

    def drop_epochs(self, epochs: set[int]) -> None:
        """Remove the per-epoch files of ``epochs`` from every table."""
        for name in TABLES:
            for epoch in epochs:
                (self.dir / name / f"e{epoch:06d}.parquet").unlink(missing_ok=True)

    def has_parts(self) -> bool:
        """Whether per-epoch files remain (a run still training, or a merge that was interrupted)."""
        return any((self.dir / name).is_dir() for name in TABLES)

    def files(self, name: str) -> list[Path]:
        """The Parquet files holding table ``name``: the merged file, or the per-epoch parts."""
        merged = self.dir / f"{name}.parquet"
        return [merged] if merged.exists() else sorted((self.dir / name).glob("e*.parquet"))

    def read(self, name: str) -> pa.Table | None:
        tables = []
        for path in self.files(name):
            table = pq.read_table(path)
            check_schema(schema_of(table), path)
            tables.append(table)
        return pa.concat_tables(tables) if tables else None

    # -- checkpoint -------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return (self.dir / CHECKPOINT).exists()

    def save_checkpoint(self, state: dict) -> None:
        import torch  # here and in load_checkpoint: the store's readers never load torch

        with writing(self.dir.parent):
            replace_from(lambda tmp: torch.save(state, tmp), self.dir / CHECKPOINT)

    def load_checkpoint(self) -> dict | None:
        """The training state at the last record, None without a checkpoint; a
        :class:`DamagedError` naming the file when it cannot be read."""
        path = self.dir / CHECKPOINT
        if not path.exists():
            return None
        try:
            import torch

            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file can fail in many ways (zip, pickle, EOF, OS)  # noqa: BLE001
            raise DamagedError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None


def _write_parquet(table: pa.Table, path: Path) -> None:
    meta = (table.schema.metadata or {}) | {SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    replace_from(lambda tmp: pq.write_table(table.replace_schema_metadata(meta), tmp), path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedError(f"{path}: unreadable JSON ({exc})") from None


@functools.lru_cache(maxsize=1 << 16)
def _config_at(path: str, mtime_ns: int, size: int):
    """The config stored at ``path`` as it was at ``mtime_ns``/``size``: read and validated once
    per process (a reader and the integrity check both need it; ~0.7 ms each for 1,000 runs).
    Every value is checked but names against the model and data-set registries (they were checked
    when the run was written; a reader that loads no network does not import torch)."""
    from ..config import stored_config

    raw = _read_json(Path(path))
    try:
        return stored_config(raw, registries=False)
    except ConfigError as exc:
        raise DamagedError(f"{path}: not a valid config ({exc})") from None
