"""Where a sweep stands, from its runs table (``rb.load(...).runs``)."""

from __future__ import annotations

import pandas as pd

STATES = ("done", "running", "pending", "diverged", "failed", "damaged")


def sweep_status(
    runs: pd.DataFrame, starting: int = 0, damaged: int = 0
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Counts per state and ``(run_id, message)`` of each failed run.

    ``running``: a live process holds the run's lock (``starting``: runs locked before their
    config is written count here too). ``pending``: started but not finished and not locked
    (interrupted: the next ``rankbias run`` resumes it from its checkpoint). ``damaged``: runs
    whose files are damaged (``store/integrity.py``; the next ``rankbias run`` retrains them).
    """
    locked = runs["locked_by"].notna() if "locked_by" in runs else pd.Series(False, index=runs.index)
    state = runs["state"].where(runs["state"].isin(["done", "diverged", "failed"]), "pending")
    state = state.where(~locked, "running")
    counts = {s: int((state == s).sum()) for s in STATES} | {"damaged": damaged}
    counts["running"] += starting
    failed = runs[state == "failed"]
    return counts, list(zip(failed["run_id"], failed["message"].fillna("")))
