"""Executors: where cohorts train. Each takes a list of :class:`~.worker.Task` and yields
``(task, outcomes)`` as cohorts finish; :class:`~.worker.StoreError` stops the sweep.

- ``inline``: in this process, one cohort after another (``jobs=1``; keeps monkeypatching and
  debuggers working).
- ``local``: ``jobs`` worker processes started with ``spawn`` (forking a process that has
  initialized torch's thread pools is unsafe), each with ``threads`` torch threads.
- ``ray``: one Ray task per cohort on a running cluster (``address`` or ``RAY_ADDRESS``) or a
  local one; a task lost with its worker is retried (``max_retries``) and resumes from the
  runs' checkpoints. Ray is imported only here.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import RankbiasError, WorkerDied
from .worker import Outcome, Task, init_worker, train_cohort

RAY_MAX_RETRIES = 3


def run_inline(tasks: list[Task], datasets: dict | None = None) -> Iterator[tuple[Task, list[Outcome]]]:
    for task in tasks:
        yield task, train_cohort(task, datasets)


def run_local(tasks: list[Task], jobs: int, threads: int) -> Iterator[tuple[Task, list[Outcome]]]:
    """Up to ``jobs`` cohorts at once in spawned processes. Closing the iterator early (fail
    fast) cancels the cohorts not started and waits for the running ones."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(train_cohort, task): task for task in tasks}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    outcomes = future.result()
                except BrokenProcessPool:
                    raise WorkerDied(
                        "a worker process died (killed, or out of memory: try a smaller --memory-cap or fewer --jobs); "
                        "the runs it trained keep their last checkpoint: run the sweep again to resume"
                    ) from None
                yield futures[future], outcomes
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(tasks: list[Task], address: str | None, threads: int) -> Iterator[tuple[Task, list[Outcome]]]:
    """One Ray task per cohort; ``num_gpus=1`` per task when the sweep's device is a GPU."""
    try:
        import ray
    except ImportError:
        raise RankbiasError("the Ray executor needs Ray: pip install 'rankbias[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    try:
        gpu = any(t.engine.device.startswith("cuda") for t in tasks)
        remote = ray.remote(_ray_cohort).options(
            num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=RAY_MAX_RETRIES
        )
        refs = {remote.remote(task, threads): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    yield refs[ref], ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


def _ray_cohort(task: Task, threads: int) -> list[Outcome]:
    import torch

    torch.set_num_threads(threads)
    if task.engine.device.startswith("cuda"):  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
        task = dataclasses.replace(task, engine=dataclasses.replace(task.engine, device="cuda"))
    return train_cohort(task)
