"""The unit of work of every executor: train one cohort of runs into a results directory.

``train_cohort`` runs in the sweep's own process (``jobs=1``), in a spawned worker process
(``--jobs N``) or in a Ray task. It takes plain values (config dicts, paths) so that it can be
pickled to any of them. For each run it first takes the run's lock (``store/lock.py``): a run
locked by a live process elsewhere is left to it ("busy"); a run another sweep finished
meanwhile is not retrained. The runs it holds are regrouped by the epoch they actually resume
from, provenance is written, and ``CohortTrainer`` trains them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import StoreError
from ..options import EngineOptions
from ..store import provenance
from ..store.integrity import repair
from ..store.io import is_fatal, store_error, writing
from ..store.lock import RunLock
from ..store.run_store import RunStore
from ..training.engine import CohortTrainer, Member


@dataclass
class Task:
    """One cohort to train: resolved configs, where to write, how to train (device resolved)."""

    configs: list[dict]
    results: str
    engine: EngineOptions
    data_root: str | None = None
    force: bool = False


@dataclass
class Outcome:
    run_id: str
    state: str  # done | diverged | failed | running (interrupted) | busy (locked elsewhere) | reused
    message: str | None = None


_DATASETS: dict = {}  # per process, by DataConfig: a worker loads each data set once


def train_cohort(task: Task, datasets: dict | None = None) -> list[Outcome]:
    """Train ``task``'s runs; returns one :class:`Outcome` per run. Raises :class:`StoreError`."""
    from ..data import load_dataset

    configs = [RunConfig.from_dict(c) for c in task.configs]
    cache = _DATASETS if datasets is None else datasets
    key = configs[0].data
    if key not in cache:
        cache[key] = load_dataset(key, task.data_root)
    results = Path(task.results)
    outcomes: dict[str, Outcome] = {}
    locks, groups = [], {}
    try:
        for config in configs:
            store = RunStore(results, config.run_id())
            lock = RunLock(store.dir)
            if not _acquire(lock, store):
                outcomes[store.run_id] = Outcome(store.run_id, "busy", "locked by another process")
                continue
            locks.append(lock)
            with writing(results):
                if task.force:
                    store.remove()
                else:
                    repair(store)  # a damaged run is emptied (trained from the start), a merge finished
                    status = store.status()
                    if status and status["state"] in ("done", "diverged"):
                        outcomes[store.run_id] = Outcome(store.run_id, "reused")
                        continue
            state = store.load_checkpoint()  # readable: repair checked it
            groups.setdefault(0 if state is None else int(state["epoch"]), []).append(Member(config, store))
        for members in groups.values():
            _train(members, cache[key], task.engine)
            for m in members:
                status = m.store.status() or {}
                outcomes[m.store.run_id] = Outcome(m.store.run_id, status.get("state", "failed"), status.get("message"))
    finally:
        for lock in locks:
            lock.release()
    return [outcomes[c.run_id()] for c in configs]


def _acquire(lock: RunLock, store: RunStore) -> bool:
    try:
        return lock.acquire()
    except OSError as exc:
        raise store_error(exc, store.dir.parent) from exc


def _train(members: list[Member], data, engine: EngineOptions) -> None:
    results = members[0].store.dir.parent
    with writing(results):
        for m in members:
            m.store.dir.mkdir(parents=True, exist_ok=True)
            provenance.start(m.store.dir, engine)
    try:
        CohortTrainer(members, data, engine).run()
    except (KeyboardInterrupt, SystemExit, StoreError):
        raise
    except Exception as exc:  # a failure of this cohort is recorded; the others go on
        if is_fatal(exc, results):  # a full or read-only disk: no cohort can go on
            raise store_error(exc, results) from exc
        with writing(results):
            _mark_failed(members, exc)
    with writing(results):
        for m in members:
            provenance.finish(m.store.dir, (m.store.status() or {}).get("state"))


def _mark_failed(members: list[Member], exc: Exception) -> None:
    for m in members:
        status = m.store.status()
        if status is None:  # failed before its first record
            m.store.write_config(m.config.to_dict())
        if status is None or status["state"] == "running":
            epoch = status["epoch"] if status else None
            m.store.set_status("failed", epoch, f"{type(exc).__name__}: {exc}")


# -- worker processes ---------------------------------------------------------------------------
def init_worker(threads: int) -> None:
    """Initializer of a spawned worker: its torch thread count, and exit when the parent dies."""
    torch.set_num_threads(threads)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # orphaned: the sweep was killed; our locks are now stale

    threading.Thread(target=watch, daemon=True).start()
