"""Results on disk: one directory per run (see ``run_store.py``)."""

from .run_store import TABLES, RunStore

__all__ = ["TABLES", "RunStore"]
