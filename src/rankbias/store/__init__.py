"""Results on disk: one directory per run (see ``run_store.py``), its lock (``lock.py``), its
provenance (``provenance.py``), and reading many runs at once (``catalog.py``)."""

from .lock import RunLock, lock_owner
from .run_store import SCHEMA_VERSION, TABLES, RunStore, SchemaError

__all__ = ["SCHEMA_VERSION", "TABLES", "RunLock", "RunStore", "SchemaError", "lock_owner"]
