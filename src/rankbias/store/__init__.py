"""Results on disk: one directory per run (``run_store.py``: its files and their names), the
records' columns and layout version (``schema.py``), its lock (``lock.py``), its provenance
(``provenance.py``), many runs read at once (``catalog.py``) and as tables (``records.py``)."""

from .lock import RunLock, lock_owner
from .run_store import RunStore, is_run
from .schema import SCHEMA_VERSION, SCHEMAS, TABLES

__all__ = ["SCHEMAS", "SCHEMA_VERSION", "TABLES", "RunLock", "RunStore", "is_run", "lock_owner"]
