"""Sweeps: plan the runs into cohorts, train them with an executor, show progress.

``execute`` is what ``rankbias.train`` calls once configs are validated and data sets loaded.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from ..config import RunConfig, flatten
from ..errors import DamagedRunWarning
from ..options import EXECUTORS, EngineOptions, SweepOptions, cores
from ..store.io import writing
from ..store.lock import LOCK_NAME, RunLock, lock_owner
from ..store.run_store import RunStore
from .executors import run_inline, run_local, run_ray
from .plan import Cohort, Plan, estimate_bytes, plan_sweep
from .progress import SweepProgress, plan_work
from .worker import Task

__all__ = [
    "EXECUTORS",
    "Cohort",
    "Plan",
    "cores",
    "default_threads",
    "estimate_bytes",
    "execute",
    "plan_sweep",
    "plan_table",
]


def default_jobs() -> int:
    """Worker processes when none is asked: one per core, one thread each (see docs/sweeps.md)."""
    return cores()


def default_threads(threads: int | None = None) -> int:
    """Torch threads of every process that trains: ``threads`` when given, else one.

    The one place of the thread policy, for cohorts trained in the calling process (one worker:
    a single run, ``jobs=1``, a one-cohort sweep), in worker processes and in Ray tasks alike.
    One thread per process, because the cohort engine's small matrix products do not survive
    sharing the cores: with two torch threads on two cores, one other busy process turns a run
    of seconds into minutes (each operation waits at a barrier for a descheduled thread), while a
    single-threaded process only slows down in proportion (measurements in docs/sweeps.md,
    ``bench/sweep_jobs.py``). Parallelism comes from processes (``jobs``, one per core by default
    on the command line); ask for more threads (``--threads``) on an idle machine or for large
    convolutions, where intra-op parallelism may pay.
    """
    return 1 if threads is None else threads


def execute(
    configs: list[RunConfig],
    results: Path,
    datasets: dict,
    engine: EngineOptions,
    sweep: SweepOptions,
    *,
    data_root=None,
    force: bool = False,
) -> set[str]:
    """Train every run of ``configs`` not finished under ``results``; returns the ids trained.

    ``engine``: with its device resolved (``EngineOptions.resolved``). Runs locked by another
    live process (a second sweep on the same directory) are left to it; when this sweep's own
    cohorts are done it waits for those locks and then resumes whatever the other process did
    not finish.
    """
    per_job = default_threads(engine.threads)
    progress = engine.progress
    trained: set[str] = set()
    display = None
    logger = RunLogger(sweep.log_to, results)  # a missing package fails here, before any training
    todo, first = configs, True
    try:
        while todo:
            plan = plan_sweep(todo, results, datasets, sweep, device=engine.torch_device, force=force and first)
            for config in plan.finished:  # a sweep killed between finishing a run and releasing it
                _finish_merge(RunStore(results, config.run_id()))
            workers = max(1, min(sweep.jobs, len(plan.cohorts)))
            inline = sweep.executor == "local" and workers == 1
            # a bar per cohort only when it is the sweep's one cohort, trained here
            cohort_bar = progress and inline and len(plan.cohorts) == 1
            if display is None:
                display = SweepProgress(len(configs), enabled=progress, terminal_bar=not cohort_bar)
            display.update(c.run_id() for c in plan.finished)  # in later rounds: runs another sweep finished
            logger.log([c.run_id() for c in plan.finished])
            if not plan.cohorts:
                break
            cohort_engine = dataclasses.replace(engine, progress=cohort_bar)
            root, out = None if data_root is None else str(data_root), str(results.resolve())
            tasks = [
                Task([c.to_dict() for c in cohort.configs], out, cohort_engine, root, force and first)
                for cohort in plan.cohorts
            ]
            kind = "Ray task" if sweep.executor == "ray" else "worker process"
            where = "in this process" if inline else f"on {workers} {kind}(es) at once"
            headline = f"training {len(plan.cohorts)} cohort(s) {where}, {per_job} torch thread(s) each"
            display.begin(plan_work(plan, results), headline)
            if inline:
                stream = _with_threads(run_inline(tasks, datasets), per_job)
            elif sweep.executor == "local":
                stream = run_local(tasks, workers, per_job)
            else:
                stream = run_ray(tasks, sweep.address, per_job)
            busy, stop = [], False
            try:
                for _, outcomes in stream:
                    busy += [o.run_id for o in outcomes if o.state == "busy"]
                    trained |= {o.run_id for o in outcomes if o.state not in ("busy", "reused")}
                    failed = sum(o.state == "failed" for o in outcomes)
                    display.update((o.run_id for o in outcomes if o.state != "busy"), failed)
                    logger.log([o.run_id for o in outcomes if o.state != "busy"])
                    if failed and sweep.fail_fast:
                        stop = True
                        break
            finally:
                stream.close()
            if stop or not busy:
                break
            _wait_for_locks(results, busy)
            todo, first = [c for c in configs if c.run_id() in set(busy)], False
    finally:
        if display is not None:
            display.close()
    return trained


class RunLogger:
    """The sweep's ``log_to`` sinks (``rankbias.sinks``): each run's stored records, replayed into
    every sink once its cohort ends (or when the sweep finds it finished), in this process. A sink
    that fails is warned about once and not used again: the records are stored, and ``rankbias
    export --to`` writes them later."""

    def __init__(self, log_to: tuple, results: Path):
        from ..sinks import make_sinks

        self.results = results
        self.sinks = make_sinks(list(log_to), group=results.absolute().name) if log_to else []
        self.logged: set[str] = set()

    def log(self, run_ids: list[str]) -> None:
        run_ids = [r for r in run_ids if r not in self.logged]
        if not self.sinks or not run_ids:
            return
        from ..sinks import replay
        from ..store.records import load

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DamagedRunWarning)  # named by the sweep's own summary
            records = load(self.results, runs=run_ids)
        for sink in list(self.sinks):
            try:
                replay(records, sink, run_ids)
            except Exception as exc:  # noqa: BLE001 - any backend's failure: the records are stored
                self.sinks.remove(sink)
                warnings.warn(f"log_to: {type(sink).__name__} failed ({type(exc).__name__}: {exc}); the sweep stops "
                              f"logging to it. Its records are stored: rankbias export {self.results} OUT --to ...",
                              RuntimeWarning, stacklevel=2)  # fmt: skip
        self.logged |= set(run_ids)


def _finish_merge(store: RunStore) -> None:
    """A finished run left by a killed sweep: its stale lock cleared, and its records merged when
    the kill came between marking it finished and merging its per-epoch files."""
    lock = RunLock(store.dir)
    lock.clear_stale()
    if store.has_parts() and lock.acquire():
        try:
            with writing(store.dir.parent):
                store.compact()
        finally:
            lock.release()


def _with_threads(stream, threads: int):
    """Run an inline stream with ``threads`` torch threads; the caller's count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield from stream
    finally:
        torch.set_num_threads(before)


def _wait_for_locks(results: Path, run_ids: list[str], poll: float = 0.5) -> None:
    """Wait until no live process holds the locks of ``run_ids`` (said once on stderr)."""
    told = False
    while True:
        owners = [lock_owner(results / r) for r in run_ids]
        live = sorted({f"{o['pid']}@{o['host']}" for o in owners if o is not None and not o["stale"]})
        if not live:
            return
        if not told:
            print(
                f"waiting for {len(run_ids)} run(s) trained by other processes ({', '.join(live)}); "
                f"if a host is gone, delete its runs' {results}/<run_id>/{LOCK_NAME}",
                file=sys.stderr,
            )
            told = True
        time.sleep(poll)


def plan_table(plan: Plan, configs: list[RunConfig], results: Path) -> pd.DataFrame:
    """One row per run of ``configs`` for ``--dry-run``: its cohort (or done), what varies."""
    from ..store.records import varied_keys

    flat = {c.run_id(): flatten(c.to_dict()) for c in configs}
    keys = varied_keys(pd.DataFrame(list(flat.values())))
    rows = []
    for number, cohort in enumerate(plan.cohorts):
        for config in cohort.configs:
            start = f"resume from epoch {cohort.resume_epoch}" if cohort.resume_epoch else "new"
            rows.append(
                {
                    "cohort": number,
                    "members": len(cohort.configs),
                    "est_MB": round(cohort.bytes / 2**20, 1),
                    "run_id": config.run_id(),
                    "action": start,
                }
            )
    for config in plan.finished:
        state = (RunStore(results, config.run_id()).status() or {}).get("state")
        rows.append(
            {"cohort": None, "members": None, "est_MB": None, "run_id": config.run_id(), "action": f"{state}: reused"}
        )
    table = pd.DataFrame(rows)
    for key in keys:
        table[key] = [flat[r][key] for r in table["run_id"]]
    return table
