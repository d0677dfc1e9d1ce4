"""Is a stored run whole? Checked by every reader (which leaves a damaged run out and names it)
and by every sweep (which retrains it), so that a damaged file costs one run, never the folder.

A run is *damaged* when one of its files cannot be read (``config.json``, ``status.json``, the
checkpoint, a Parquet file), a Parquet file is of another schema version, or a recorded epoch is
missing from one of its tables: the epochs a run records are 0, every ``record.every``-th and
the last (:func:`recorded_epochs`), and a run whose status says epoch k has every one of them up
to k (a run that diverged at k, up to k − 1).

Readers check many runs at once (:func:`scan`): the JSON files and the checkpoint's zip
directory per run, the Parquet files of all runs in one DuckDB pass (their schema version and
the epochs they hold); only when that pass fails are the files checked one by one, to name the
damaged ones. A sweep checks a run before reusing or resuming it (:func:`resume_epoch`,
:func:`repair`), reading its checkpoint in full.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from ..config import TrackedConfig
from ..errors import DamagedError, SchemaError
from .run_store import CHECKPOINT, RunStore, is_run
from .schema import RECORD_TABLES, SCHEMA_KEY, TABLES, check_files, check_schema


def recorded_epochs(every: int, epochs: int, upto: int) -> set[int]:
    """The epochs ≤ ``upto`` a run with ``record.every`` and ``train.epochs`` records."""
    return {e for e in range(upto + 1) if e % every == 0 or e == epochs}


@dataclass
class Scan:
    """The runs under a folder: ``healthy`` run directories, and ``damaged`` ones with what is
    wrong (a :class:`DamagedError` or :class:`SchemaError` whose message names the file)."""

    healthy: list[Path] = field(default_factory=list)
    damaged: dict[Path, DamagedError | SchemaError] = field(default_factory=dict)


def scan(dirs: list[Path], statuses: dict[Path, dict] | None = None, attempts: int = 5) -> Scan:
    """Check the runs ``dirs``; see the module's docstring. ``statuses``: a run's status to check
    against instead of its stored one (a run about to be marked finished). A run being merged
    while it is read (its part files vanish) is listed again, not called damaged."""
    for attempt in range(attempts):
        try:
            return _scan(dirs, statuses or {})
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _scan(dirs: list[Path], statuses: dict[Path, dict]) -> Scan:
    out = Scan()
    expected: dict[Path, tuple[set[int], list[str]]] = {}
    for run_dir in dirs:
        try:
            expected[run_dir] = _expected(RunStore.at(run_dir), statuses.get(run_dir))
        except DamagedError as exc:
            out.damaged[run_dir] = exc
    files = {d: {name: RunStore.at(d).files(name) for name in TABLES} for d in expected}
    for run_dir, reason in _unreadable(files).items():
        out.damaged[run_dir] = reason
        expected.pop(run_dir)
    held = _epochs({d: files[d] for d in expected})
    for run_dir, (wanted, tables) in expected.items():
        problem = _incomplete(run_dir, wanted, tables, held)
        if problem is not None:
            out.damaged[run_dir] = DamagedError(problem)
    out.healthy = [d for d in dirs if d not in out.damaged]
    return out


def _expected(store: RunStore, status: dict | None = None) -> tuple[set[int] | None, list[str]]:
    """The epochs the run's records must hold (from its config and ``status``, default its
    stored one; None for a tracked run: whichever its scalars hold) and its tables; a
    :class:`DamagedError` when the config, status or checkpoint
    is unreadable."""
    config, status = store.read_config(), status or store.status()
    checkpoint = store.dir / CHECKPOINT
    if checkpoint.exists() and not zipfile.is_zipfile(checkpoint):
        raise DamagedError(f"{checkpoint}: unreadable checkpoint (not a complete file)")
    if isinstance(config, TrackedConfig):  # epochs of the user's choosing: the ones its scalars hold
        return None, list(RECORD_TABLES)
    tables = [*RECORD_TABLES, "step_norms"] if config.record.step_norms else list(RECORD_TABLES)
    if status is None or status.get("epoch") is None:
        return set(), tables
    upto = int(status["epoch"]) - (status["state"] == "diverged")
    if status["state"] == "done" and upto != config.train.epochs:
        raise DamagedError(f"{store.dir / 'status.json'}: done at epoch {upto} of {config.train.epochs}")
    return recorded_epochs(config.record.every, config.train.epochs, upto), tables


def _unreadable(files: dict[Path, dict[str, list[Path]]]) -> dict[Path, DamagedError | SchemaError]:
    """Runs with a Parquet file that cannot be read or is of another schema version: one DuckDB
    pass over all footers; when it fails, file by file to name them."""
    everything = [str(f) for tables in files.values() for fs in tables.values() for f in fs]
    if not everything:
        return {}
    con = duckdb.connect()
    try:
        check_files(con, everything)
        return {}
    except duckdb.IOException:
        if not all(Path(f).exists() for f in everything):
            raise FileNotFoundError("a file vanished while it was read") from None
    except (duckdb.Error, SchemaError):
        pass
    finally:
        con.close()
    damaged = {}
    for run_dir, tables in files.items():
        for path in (f for fs in tables.values() for f in fs):
            problem = _file_problem(path)
            if problem is not None:
                damaged[run_dir] = problem
                break
    return damaged


def _file_problem(path: Path) -> DamagedError | SchemaError | None:
    try:
        meta = pq.read_schema(path).metadata or {}
        check_schema(int(meta[SCHEMA_KEY]) if SCHEMA_KEY in meta else None, path)
    except FileNotFoundError:
        raise
    except SchemaError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 — any failure to read it makes the file damaged
        return DamagedError(f"{path}: unreadable Parquet file ({type(exc).__name__})")
    return None


BY_EPOCH = ("scalars", "step_norms")  # merged tables whose epochs are read; the others' rows are counted


def _incomplete(run_dir: Path, wanted: set[int] | None, tables: list[str], held: dict) -> str | None:
    """What is missing from a run's records (``wanted``: its epochs; None: those of its scalars),
    or None. Part files and merged :data:`BY_EPOCH`
    tables give their epochs; merged layers and spectra their row counts, which must be one count
    of matrices per scalars epoch, the same in both (a merge writes every table from the same parts)."""
    epochs = held.get((run_dir, "scalars"), set())
    wanted = epochs if wanted is None else wanted
    for name in tables:
        value = held.get((run_dir, name), set())
        if isinstance(value, set):
            missing = sorted(wanted - value)
            if missing:
                return f"{run_dir / name}: epoch(s) {_short(missing)} missing"
        elif (value % len(epochs) if epochs else value) or (name == "spectra" and _differs(value, held, run_dir)):
            return f"{run_dir / name}.parquet: {value} rows do not match the {len(epochs)} recorded epochs"
    return None


def _differs(rows: int, held: dict, run_dir: Path) -> bool:
    """Whether ``rows`` (a merged spectra file's) differs from the merged layers file's: one row per
    matrix and epoch in both."""
    layers = held.get((run_dir, "layers"))
    return isinstance(layers, int) and rows != layers


def _epochs(files: dict[Path, dict[str, list[Path]]]) -> dict[tuple[Path, str], set[int] | int]:
    """Per run and table: the epochs of part files (by name) and of merged :data:`BY_EPOCH`
    tables (one DuckDB pass), the row count of the other merged tables (their footers, one pass)."""
    out: dict[tuple[Path, str], set[int] | int] = {}
    merged: dict[str, tuple[Path, str]] = {}
    for run_dir, tables in files.items():
        for name, paths in tables.items():
            if len(paths) == 1 and paths[0].name == f"{name}.parquet":
                merged[str(paths[0])] = (run_dir, name)
            else:
                out[(run_dir, name)] = {int(p.stem[1:]) for p in paths}
    scalars = [f for f, (_, name) in merged.items() if name in BY_EPOCH]
    others = [f for f, (_, name) in merged.items() if name not in BY_EPOCH]
    con = duckdb.connect()
    try:
        if scalars:
            query = "select filename, list(distinct epoch) from read_parquet(?, filename = true) group by filename"
            for filename, epochs in con.execute(query, [scalars]).fetchall():
                out[merged[filename]] = set(epochs)
        if others:
            query = "select file_name, num_rows from parquet_file_metadata(?)"
            for filename, rows in con.execute(query, [others]).fetchall():
                out[merged[filename]] = int(rows)
    except duckdb.IOException:
        if not all(Path(f).exists() for f in merged):
            raise FileNotFoundError("a file vanished while it was read") from None
        raise
    finally:
        con.close()
    return out


def _short(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs[:5])) + (f" … ({len(epochs)} in all)" if len(epochs) > 5 else "")


# -- the writer's side ----------------------------------------------------------------------------
def resume_point(store: RunStore) -> tuple[int, str, str | None]:
    """``(epoch, path, damage)``: the epoch a run resumes from — its checkpoint's (read in full)
    when the run is whole, else 0: trained from the start —, the training path its checkpoint
    was written on (``eager`` or ``native``; ``""`` for a run trained from the start), and what
    is damaged (naming the file), or None."""
    damaged = scan([store.dir]).damaged.get(store.dir) if is_run(store.dir) else None
    if damaged is not None:
        return 0, "", str(damaged)
    try:
        state = store.load_checkpoint()
    except DamagedError as exc:
        return 0, "", str(exc)
    if state is None or int(state["epoch"]) == 0:
        return 0, "", None
    return int(state["epoch"]), state.get("path", "eager"), None


def repair(store: RunStore) -> str | None:
    """Make a run trainable again (under its lock): a damaged run loses its files (it is trained
    from the start) and an interrupted merge is finished. Returns what was damaged, or None."""
    *_, damaged = resume_point(store)
    if damaged is not None:
        store.remove()
        return damaged
    status = store.status()
    if status is not None and status["state"] in ("done", "diverged") and store.has_parts():
        store.compact()  # killed between marking the run finished and merging its records
    return None
