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

TABLES = ("scalars", "layers", "spectra")


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
        shutil.rmtree(self.dir, ignore_errors=True)

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

    def read(self, name: str) -> pa.Table | None:
        merged = self.dir / f"{name}.parquet"
        if merged.exists():
            return pq.read_table(merged)
        parts = sorted((self.dir / name).glob("e*.parquet"))
        return pa.concat_tables(pq.read_table(p) for p in parts) if parts else None

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
    pq.write_table(table, tmp)
    os.replace(tmp, path)
