"""The records' columns and types (``docs/records.md``), and their layout version.

Every Parquet file of a run carries :data:`SCHEMA_VERSION` in its key-value metadata
(:data:`SCHEMA_KEY`); readers refuse files of another version with a
:class:`~rankbias.errors.SchemaError`. Files without the key predate versioning and have layout 1.
Bump the version when a column is renamed, removed or changes meaning. The engine fills rows;
:func:`table` makes them a table of one of these schemas, so every run's files have one layout.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..errors import SchemaError

SCHEMA_VERSION = 1
SCHEMA_KEY = b"rankbias.schema"

_RUN = [("run_id", pa.string()), ("epoch", pa.int64())]
SCHEMAS = {
    # one row per run and record
    "scalars": pa.schema(_RUN + [("step", pa.int64())] + [(name, pa.float64()) for name in (
        "train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "lr", "avg_rank", "distance",
        "epoch_seconds", "spectra_seconds", "record_seconds",
    )]),
    # one row per run, record and weight matrix
    "layers": pa.schema(_RUN + [
        ("layer", pa.string()), ("index", pa.int64()), ("rows", pa.int64()), ("cols", pa.int64()),
        ("m_l", pa.int64()), ("counted", pa.bool_()), ("fro_norm", pa.float64()), ("spectral_norm", pa.float64()),
        ("eps_rank", pa.int64()), ("stable_rank", pa.float64()), ("effective_rank", pa.float64()),
        ("delta_fro", pa.float64()), ("norm_ratio", pa.float64()),
    ]),
    # one row per run, record and weight matrix: every singular value, descending
    "spectra": pa.schema(_RUN + [("layer", pa.string()), ("sv", pa.list_(pa.float32()))]),
    # with record.step_norms: one row per run, record, step and weight matrix
    "step_norms": pa.schema(_RUN + [("step", pa.int64()), ("layer", pa.string()), ("fro_norm", pa.float64())]),
    # runs recorded by rb.Tracker: any other scalar the user logged, one row per run, record and name
    "metrics": pa.schema(_RUN + [("name", pa.string()), ("value", pa.float64())]),
}  # fmt: skip
TABLES = tuple(SCHEMAS)
RECORD_TABLES = ("scalars", "layers", "spectra")  # every run has these at every record; the others are optional
FORMATS = ("csv", "parquet")  # the file formats `rankbias export` writes a table as


def table(name: str, rows: list[dict]) -> pa.Table:
    """Records of table ``name`` from its rows (dicts with exactly the schema's columns)."""
    schema = SCHEMAS[name]
    for row in rows:
        assert row.keys() == set(schema.names), f"{name}: columns {sorted(row)} differ from the schema"  # a bug
    return pa.Table.from_pylist(rows, schema=schema)


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
    """The layout version a table was written with (None: unversioned)."""
    meta = table.schema.metadata or {}
    return int(meta[SCHEMA_KEY]) if SCHEMA_KEY in meta else None


def check_files(con, files: list[str]) -> None:
    """Every Parquet file's ``rankbias.schema`` metadata (absent: layout 1) must be this version's:
    one DuckDB pass over their footers (``con``: a DuckDB connection)."""
    rows = con.execute(
        "select file_name, decode(value) from parquet_kv_metadata(?) where decode(key) = ?",
        [files, SCHEMA_KEY.decode()],
    ).fetchall()
    for file_name, version in rows:
        check_schema(int(version), file_name)
