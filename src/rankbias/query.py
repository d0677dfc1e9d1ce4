"""SQL over stored runs: DuckDB views on the Parquet files of a results directory.

Views (columns as in ``docs/records.md``):

- ``runs``: one row per run: ``run_id``, ``state``, ``state_epoch``, ``message``, ``locked_by``
  and every config key as a column (``"train.batch_size"``, ``"optimizer.lr"`` ...: quote the
  dotted names in SQL);
- ``scalars``, ``layers``, ``spectra`` (and ``step_norms`` when recorded): the records of every
  run, finished or still running;
- ``final``: each run's last recorded epoch (its ``scalars`` row) joined with its ``runs`` row.

>>> import rankbias as rb
>>> rb.query("results", 'select "train.batch_size", avg(avg_rank) from final group by 1')  # doctest: +SKIP

DuckDB reads the Parquet files in place, in parallel, and only the columns a query uses, so a
``final`` query over thousands of runs takes well under a second (``bench/store_scale.py``).

**Read only.** :func:`query` runs read statements only: DuckDB's own parser splits the SQL into
statements and anything but ``SELECT`` (``WITH``, ``FROM``-first, ``VALUES``, ``DESCRIBE``,
``SHOW``, ``SUMMARIZE``, ``PIVOT ... IN (...)`` are all ``SELECT``) or ``EXPLAIN [ANALYZE]`` of a
``SELECT`` is refused with :class:`~rankbias.errors.QueryError` before anything runs: ``COPY``,
``CREATE``, ``INSERT``, ``ATTACH``, ``SET``, ``PRAGMA``, ``CALL``, ``EXPORT``, ``LOAD`` ... Writing
files is :func:`export`'s job. (DuckDB's ``enable_external_access``/``allowed_directories``
settings are no second guard: in DuckDB 2.0.1 a directory allowed for reading the records is
allowed for writing too, so they would not protect the records, and they would forbid reading a
file of one's own beside them.)

**Consistent during a sweep.** A view lists its files when it is created; a run that ends in
between merges its per-epoch files into one and deletes them (``RunStore.compact``, the merged
file first). A DuckDB error while some listed file no longer exists therefore means "list again":
the views are rebuilt and the statement rerun (a few times, a short sleep apart), so a query
while a sweep writes sees every run either by its parts or by its merged file, never fails for it.

**Export all or nothing.** :func:`export` writes every view into a hidden folder inside ``out``
and moves the files into place only when all are written; a full or read-only disk raises one
:class:`~rankbias.errors.StoreError` and leaves ``out`` as it was (other files there are never
touched).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from .errors import ConfigError, QueryError
from .store.catalog import run_dirs, runs_table, table_files
from .store.io import FATAL_ERRNOS, check_output, writing
from .store.schema import FORMATS, TABLES, check_files

VIEWS = ("runs", *TABLES, "final")
ATTEMPTS = 6  # listings of the files before a vanished file counts as an error
READ_STATEMENTS = (duckdb.StatementType.SELECT,)
_EXPLAIN = re.compile(r"\s*explain\s+(?:analy[sz]e\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)

T = TypeVar("T")


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of the runs under ``path``.

    The views list the files as they are now: a run that ends later merges its per-epoch files,
    so call :func:`create_views` again on a long-lived connection (it replaces the views).
    Records of another schema version raise :class:`~rankbias.errors.SchemaError`.
    """
    con = duckdb.connect()
    try:
        create_views(con, path)
    except BaseException:
        con.close()
        raise
    return con


def create_views(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    """Create, or replace, the views of the runs under ``path`` on ``con`` (listing the files
    again; a view of a table no longer recorded is dropped)."""
    _with_views(con, path, lambda con: None)


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """The result of ``sql`` (read statements only) over the views of the runs under ``path``,
    as a DataFrame. Several statements may be given; the last one's result is returned."""

    def run(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
        check_read_only(con, sql)
        return con.sql(sql).df()

    con = duckdb.connect()
    try:
        return _with_views(con, path, run)
    finally:
        con.close()


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise :class:`QueryError` unless every statement of ``sql`` only reads (DuckDB's parser
    decides: ``SELECT``, or ``EXPLAIN [ANALYZE]`` of a ``SELECT``). A syntax error raises
    DuckDB's ``ParserException``."""
    statements = con.extract_statements(sql)
    if not statements:
        raise QueryError("no SQL statement to run")
    for statement in statements:
        kind = statement.type
        if kind in READ_STATEMENTS:
            continue
        if kind == duckdb.StatementType.EXPLAIN and _explains_a_read(con, statement.query):
            continue
        if kind == duckdb.StatementType.EXPLAIN:
            what = "EXPLAIN of anything but a SELECT is"
        else:
            what = f"{kind.name} statements are"
        hint = " (a PIVOT needs its IN list here: PIVOT ... ON col IN (...))" if kind.name == "MULTI" else ""
        raise QueryError(f"rankbias query only reads: {what} refused{hint} (use rb.export to write files)")


def export(path: str | Path, out: str | Path, format: str = "csv") -> list[Path]:
    """Write every view of the runs under ``path`` to ``out/<view>.<format>``; returns the files.

    All or nothing: the files are written into a hidden folder inside ``out`` and moved into place
    once every one is written; a full or read-only disk raises one
    :class:`~rankbias.errors.StoreError` and leaves ``out`` as it was. Other files in ``out`` stay.
    """
    if format not in FORMATS:
        raise ConfigError("format", f"must be one of {FORMATS}, got {format!r}")
    out = check_output(out, "out", folder=True)
    created = not out.exists()
    staging: Path | None = None
    con = duckdb.connect()
    try:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))

        def write_all(con: duckdb.DuckDBPyConnection) -> list[str]:
            views = _views(con)
            with writing(out):
                for view in views:
                    _write_view(con, view, staging / f"{view}.{format}", format)
            return views

        views = _with_views(con, path, write_all)
        written = [out / f"{view}.{format}" for view in views]
        with writing(out):
            for target in written:  # renames in one folder: no space needed, each atomic
                os.replace(staging / target.name, target)
        return written
    finally:
        con.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):  # removed only while empty: after a failed export
                out.rmdir()


# -- internals ------------------------------------------------------------------------------


def _write_view(con: duckdb.DuckDBPyConnection, view: str, target: Path, format: str) -> None:
    """``view`` into ``target``; a write that fails for a full or read-only disk raises its
    ``OSError`` (DuckDB reports it as an ``IOException`` with the system's message)."""
    options = "format csv, header true" if format == "csv" else "format parquet"
    try:
        con.execute(f"copy (select * from {view}) to '{_quote(target)}' ({options})")
    except duckdb.Error as exc:
        fatal = _disk_error(exc)
        if fatal is None:
            raise
        raise fatal from exc


def _with_views(con: duckdb.DuckDBPyConnection, path: str | Path, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Build the views of the runs under ``path`` on ``con`` and call ``work(con)``; when DuckDB
    fails while a listed file has vanished (a run merged its parts, or dropped some to resume),
    list again and redo both. Other DuckDB errors raise :class:`QueryError` at once."""
    for attempt in range(ATTEMPTS):
        listed: list[Path] = []
        dirs: list[Path] = []
        try:
            dirs = run_dirs(path)
            _create_views(con, dirs, listed)
            return work(con)
        except (duckdb.Error, FileNotFoundError) as exc:
            vanished = any(not f.exists() for f in listed) or any(not d.exists() for d in dirs)
            if vanished and attempt < ATTEMPTS - 1:
                time.sleep(0.02 * (attempt + 1))
                continue
            if not isinstance(exc, duckdb.Error):
                raise
            raise QueryError(f"{exc} (views: {', '.join(_views(con))})") from None
    raise AssertionError("unreachable")


def _create_views(con: duckdb.DuckDBPyConnection, dirs: list[Path], listed: list[Path]) -> None:
    """(Re)create every view for the runs ``dirs``, appending the files read to ``listed`` as
    they are listed (so a failure partway still says which files were meant)."""
    runs = runs_table(dirs)
    for column in runs.columns:  # tuples (e.g. schedule.milestones) become DuckDB lists
        if runs[column].map(lambda v: isinstance(v, tuple)).any():
            runs[column] = runs[column].map(lambda v: list(v) if isinstance(v, tuple) else v)
    con.register("runs_frame", runs)  # replaces the frame of an earlier listing
    con.execute("create or replace view runs as select * from runs_frame")
    present = []
    for name in TABLES:
        files = table_files(dirs, name)
        listed.extend(files)
        if not files:
            con.execute(f"drop view if exists {name}")
            continue
        names = [str(f) for f in files]
        check_files(con, names)
        listing = ", ".join(f"'{_quote(f)}'" for f in names)  # a view cannot take parameters
        con.execute(f"create or replace view {name} as select * from read_parquet([{listing}], union_by_name = true)")
        present.append(name)
    if "scalars" in present:
        con.execute(
            "create or replace view final as select s.*, r.* exclude (run_id) from "
            "(select * from scalars qualify row_number() over (partition by run_id order by epoch desc) = 1) s "
            "join runs r on s.run_id = r.run_id"
        )
    else:
        con.execute("drop view if exists final")


def _explains_a_read(con: duckdb.DuckDBPyConnection, text: str) -> bool:
    """Whether ``text`` is ``EXPLAIN [ANALYZE] [(options)]`` of one SELECT (EXPLAIN ANALYZE runs
    its statement). Anything the pattern does not take apart (a comment first ...) is refused."""
    match = _EXPLAIN.match(text)
    if match is None:
        return False
    try:
        inner = con.extract_statements(text[match.end() :])
    except duckdb.Error:
        return False
    return len(inner) == 1 and inner[0].type in READ_STATEMENTS


def _disk_error(exc: duckdb.Error) -> OSError | None:
    """The ``OSError`` of a DuckDB error that says the disk is full or not writable (its message
    has the system's text, and for a failed write the errno), else None."""
    text = str(exc)
    for code in FATAL_ERRNOS:
        if f'"errno":"{code}"' in text or os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return None


def _views(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    return [v for v in VIEWS if v in names]


def _quote(path) -> str:
    return str(path).replace("'", "''")
