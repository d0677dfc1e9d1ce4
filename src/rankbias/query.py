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
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from .errors import ConfigError, QueryError
from .store.catalog import check_files, run_dirs, runs_table, table_files
from .store.schema import TABLES

VIEWS = ("runs", *TABLES, "final")
FORMATS = ("csv", "parquet")


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of the runs under ``path``.

    Records of another schema version raise :class:`~rankbias.store.run_store.SchemaError`.
    """
    dirs = run_dirs(path)
    con = duckdb.connect()
    runs = runs_table(dirs)
    for column in runs.columns:  # tuples (e.g. schedule.milestones) become DuckDB lists
        if runs[column].map(lambda v: isinstance(v, tuple)).any():
            runs[column] = runs[column].map(lambda v: list(v) if isinstance(v, tuple) else v)
    con.register("runs_frame", runs)
    con.execute("create view runs as select * from runs_frame")
    present = []
    for name in TABLES:
        files = [str(f) for f in table_files(dirs, name)]
        if not files:
            continue
        check_files(con, files)
        listing = ", ".join(f"'{_quote(f)}'" for f in files)  # a view cannot take parameters
        con.execute(f"create view {name} as select * from read_parquet([{listing}], union_by_name = true)")
        present.append(name)
    if "scalars" in present:
        con.execute(
            "create view final as select s.*, r.* exclude (run_id) from "
            "(select * from scalars qualify row_number() over (partition by run_id order by epoch desc) = 1) s "
            "join runs r on s.run_id = r.run_id"
        )
    return con


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """The result of ``sql`` over the views of the runs under ``path``, as a DataFrame."""
    con = connect(path)
    try:
        return con.sql(sql).df()
    except duckdb.Error as exc:
        raise QueryError(f"{exc} (views: {', '.join(_views(con))})") from None
    finally:
        con.close()


def export(path: str | Path, out: str | Path, format: str = "csv") -> list[Path]:
    """Write every view of the runs under ``path`` to ``out/<view>.<format>``; returns the files."""
    if format not in FORMATS:
        raise ConfigError("format", f"must be one of {FORMATS}, got {format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con = connect(path)
    written = []
    try:
        for view in _views(con):
            target = out / f"{view}.{format}"
            options = "format csv, header true" if format == "csv" else "format parquet"
            con.execute(f"copy (select * from {view}) to '{_quote(target)}' ({options})")
            written.append(target)
    finally:
        con.close()
    return written


def _views(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    return [v for v in VIEWS if v in names]


def _quote(path) -> str:
    return str(path).replace("'", "''")
