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

Every Parquet file carries the records' layout version in its key-value metadata
(``rankbias.schema``); readers refuse files of another version with a :class:`SchemaError`.
Files without the key predate versioning and have layout 1. ``run.lock`` (see ``lock.py``) and
``provenance.json`` (see ``provenance.py``) sit beside the records.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import RankbiasError

TABLES = ("scalars", "layers", "spectra", "step_norms")  # step_norms only with record.step_norms
SCHEMA_VERSION = 1  # bump when a column is renamed, removed or changes meaning
SCHEMA_KEY = b"rankbias.schema"


class SchemaError(RankbiasError):
    """Records written with another layout version than this rankbias reads."""


def check_schema(version: int | None, where: str | Path) -> None:
    """Raise :class:`SchemaError` unless ``version`` (None: unversioned, i.e. 1) is readable."""
    version = 1 if version is None else int(version)
    if version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        hint = "upgrade rankbias to read it" if newer else "re-run it (or read it with the rankbias that wrote it)"
        raise SchemaError(
            f"{where} holds records of schema version {version}, {'newer' if newer else 'older'} than the "
            f"version {SCHEMA_VERSION} this rankbias reads: {hint}"
        )


def schema_of(table: pa.Table) -> int | None:
    meta = table.schema.metadata or {}
    return int(meta[SCHEMA_KEY]) if SCHEMA_KEY in meta else None


class RunStore:
    def __init__(self, root: str | Path, run_id: str):
        self.run_id = run_id
        self.dir = Path(root) / run_id

    # -- status and config ------------------------------------------------------------------
    def status(self) -> dict | None:
        path = self.dir / "status.json"
        return json.loads(path.read_text()) if path.exists() else None

    def set_status(self, state: str, epoch: int | None = None, message: str | None = None) -> None:
        _write_text(self.dir / "status.json", json.dumps({"state": state, "epoch": epoch, "message": message, "time": time.time()}))

    def write_config(self, config: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_text(self.dir / "config.json", json.dumps(config, indent=2, sort_keys=True))

    def remove(self) -> None:
        """Delete the run's files, except its lock (held by whoever removes it)."""
        if not self.dir.exists():
            return
        for path in self.dir.iterdir():
            if path.name == "run.lock":
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
        """Merge each table's per-epoch files into ``<table>.parquet`` and remove them."""
        for name in TABLES:
            folder = self.dir / name
            parts = sorted(folder.glob("e*.parquet"))
            if parts:
                _write_parquet(pa.concat_tables(pq.read_table(p) for p in parts), self.dir / f"{name}.parquet")
            shutil.rmtree(folder, ignore_errors=True)

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
    def save_checkpoint(self, state: dict) -> None:
        tmp = self.dir / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.dir / "checkpoint.pt")

    def load_checkpoint(self) -> dict | None:
        path = self.dir / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    meta = (table.schema.metadata or {}) | {SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    os.replace(tmp, path)
