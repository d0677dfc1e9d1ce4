"""Many runs at once: find the run directories under a path, list their Parquet files, read
them in one pass, and build the ``runs`` table (one row per run, the config flattened).

``rb.load`` and ``rb.query`` both read through here, so they see the same runs and the same
schema check.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from ..errors import DamagedRunWarning, NotFoundError
from .integrity import Scan, scan
from .lock import lock_owner
from .run_store import RunStore, is_run
from .schema import TABLES, check_files

MAX_DEPTH = 3  # folders below a results folder searched for runs (results/demo/<run>: depth 1)


def candidate_dirs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a run directory, else the run directories under it: its own, then
    those in its subfolders (``results/demo/`` after ``make demo``; ``results/runs/`` of
    ``rankbias reproduce``), breadth first, at most ``MAX_DEPTH`` levels down, sorted within a
    folder. A run id found twice (the same config trained in two folders) is read once, from the
    folder nearest to ``path``; hidden folders are skipped. :func:`folders_note` says where they are."""
    path = Path(path)
    if is_run(path):
        return [path]
    found: dict[str, Path] = {}
    level = [path] if path.is_dir() else []
    for _ in range(MAX_DEPTH + 1):
        below = []
        for folder in level:
            try:
                children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:  # unreadable subfolder: not ours to judge
                continue
            for child in children:
                if is_run(child):
                    found.setdefault(child.name, child)
                else:
                    below.append(child)
        level = below
    if not found:
        raise NotFoundError(f"no rankbias runs under {path} (nor in its subfolders)")
    return list(found.values())


def folders_note(path: str | Path, dirs: list[Path]) -> str | None:
    """``"read 15 runs: 9 in results/, 6 in results/demo/"`` when some runs of ``dirs`` are not
    directly under ``path``; None when all are (or ``path`` is one run)."""
    path = Path(path)
    if is_run(path) or all(d.parent == path for d in dirs):
        return None
    parents: dict[Path, int] = {}
    for d in dirs:
        parents[d.parent] = parents.get(d.parent, 0) + 1
    where = ", ".join(f"{n} in {folder}/" for folder, n in parents.items())
    return f"read {len(dirs)} runs: {where}"


def scan_runs(path: str | Path) -> Scan:
    """The runs under ``path``, checked (``integrity.scan``): healthy and damaged ones. Damaged
    runs are named in one :class:`~rankbias.errors.DamagedRunWarning`; when no run is healthy,
    the first one's error is raised instead (a command whose only input is damaged fails)."""
    found = scan(candidate_dirs(path))
    if found.damaged:
        if not found.healthy:
            first = next(iter(found.damaged.values()))
            more = f" (and {len(found.damaged) - 1} more damaged run(s))" if len(found.damaged) > 1 else ""
            raise type(first)(f"{first}{more}")
        warnings.warn(DamagedRunWarning(damage_note(found.damaged)), stacklevel=3)
    return found


def damage_note(damaged: dict[Path, Exception]) -> str:
    """One line naming the damaged runs and their files (``rankbias status`` lists them all)."""
    shown = "; ".join(f"{d.name} ({e})" for d, e in list(damaged.items())[:3])
    more = f"; {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return f"{len(damaged)} damaged run(s) left out: {shown}{more}. `rankbias run` retrains them"


def run_dirs(path: str | Path) -> list[Path]:
    """The healthy run directories of ``path`` (a run, or a folder of runs); see :func:`scan_runs`."""
    return scan_runs(path).healthy


def table_files(dirs: list[Path], name: str) -> list[Path]:
    """Every Parquet file of table ``name`` of the runs ``dirs`` (merged, or per-epoch parts)."""
    files: list[Path] = []
    for run_dir in dirs:
        files += RunStore.at(run_dir).files(name)
    return files


def read_tables(dirs: list[Path], names=TABLES) -> dict[str, pa.Table | None]:
    """Tables ``names`` of the runs ``dirs``, each concatenated over runs (in run order).

    DuckDB reads the files in parallel (about 0.2 s for 1,000 small files, against 1 s for
    pyarrow file by file); every file's schema version is checked first.
    """
    out = {}
    con = duckdb.connect()
    try:
        for name in names:
            out[name] = _read_table(con, dirs, name)
    finally:
        con.close()
    return out


def _read_table(con: duckdb.DuckDBPyConnection, dirs: list[Path], name: str, attempts: int = 5) -> pa.Table | None:
    """One table of ``dirs``. A run being written may merge its per-epoch files into one while
    we read (``RunStore.compact``): a file that vanished between listing and reading means
    "list again", not an error."""
    for attempt in range(attempts):
        files = [str(f) for f in table_files(dirs, name)]
        if not files:
            return None
        try:
            check_files(con, files)
            query = "select * from read_parquet($files, union_by_name = true)"
            return con.sql(query, params={"files": files}).to_arrow_table()
        except duckdb.IOException:
            if attempt == attempts - 1 or all(Path(f).exists() for f in files):
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def runs_table(dirs: list[Path]) -> pd.DataFrame:
    """One row per run: ``run_id``, ``state``, ``state_epoch``, ``message``, ``locked_by``
    (``pid@host`` of a live writer, else None) and every config key (``optimizer.lr`` ...)."""
    from ..config import RunConfig, flatten

    rows = []
    for run_dir in dirs:
        store = RunStore.at(run_dir)
        config, status = store.read_config(), store.status() or {}
        owner = lock_owner(run_dir)
        locked = None if owner is None or owner["stale"] else f"{owner['pid']}@{owner['host']}"
        row = {
            "run_id": run_dir.name,
            "state": status.get("state"),
            "state_epoch": status.get("epoch"),
            "message": status.get("message"),
        }
        rows.append(row | flatten(config.to_dict()) | {"locked_by": locked})
    table = pd.DataFrame(rows)
    # runs recorded by rb.Tracker set only the keys their user gave: the others are missing (NaN)
    missing = [k for k in flatten(RunConfig().to_dict()) if k not in table.columns]
    return table.reindex(columns=[*table.columns, *missing]) if len(rows) else table
