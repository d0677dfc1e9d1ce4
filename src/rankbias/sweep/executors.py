"""Executors: where cohorts train. Each takes a list of :class:`~.worker.Task` and yields
``(task, outcomes)`` as cohorts finish; :class:`~.worker.StoreError` stops the sweep.

- ``inline``: in this process, one cohort after another (``jobs=1``; keeps monkeypatching and
  debuggers working).
- ``local``: ``jobs`` worker processes started with ``spawn`` (forking a process that has
  initialized torch's thread pools is unsafe), each with ``threads`` torch threads.
- ``ray``: one Ray task per cohort on a running cluster (``address`` or ``RAY_ADDRESS``) or a
  local one; a task lost with its worker is retried (``max_retries``) and resumes from the
  runs' checkpoints. An address whose port does not answer within ``RAY_CONNECT_TIMEOUT`` is one
  :class:`RankbiasError`; a task that raises is one line too, its remote traceback appended to
  ``<results>/ray-errors.log``. Ray is imported only here.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import RankbiasError, WorkerDied
from .worker import Outcome, Task, init_worker, train_cohort

RAY_MAX_RETRIES = 3
RAY_CONNECT_TIMEOUT = 15  # seconds: a cluster address whose port does not answer within it is an error
RAY_ERROR_LOG = "ray-errors.log"  # in the results folder (else the temp folder): remote tracebacks


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
        from ray.exceptions import RayError
    except ImportError:
        raise RankbiasError("the Ray executor needs Ray: pip install 'rankbias[ray]'") from None
    started = not ray.is_initialized()
    if started:
        hint = "leave --address out" if address else "unset RAY_ADDRESS"
        address = address or os.environ.get("RAY_ADDRESS")
        check_ray_address(address, f"{hint} for a local Ray")
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
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
                    try:
                        outcomes = ray.get(ref)
                    except RayError as exc:
                        raise ray_failure(exc, refs[ref].results) from None
                    yield refs[ref], outcomes
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


def check_ray_address(address: str | None, hint: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Raise one :class:`RankbiasError` unless something accepts a TCP connection at ``address``
    (``host:port`` or ``ray://host:port``) within ``timeout`` seconds. ``None``, ``auto``,
    ``local`` and what does not parse as host:port are left to Ray. Without this, ``ray.init``
    retries an address that does not answer for many minutes."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError:
        raise RankbiasError(
            f"no Ray cluster answers at {address} within {timeout:g} s: start one (ray start --head) or {hint}"
        ) from None


def _host_port(address: str | None) -> tuple[str, int] | None:
    if not address or address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    if not host or not port.isdigit():
        return None
    return host, int(port)


def ray_failure(exc: BaseException, results: str) -> RankbiasError:
    """The error to raise for a Ray task that failed with ``exc`` (whose text holds the remote
    traceback): the traceback goes to :func:`log_ray_error`'s file; a :class:`RankbiasError`
    raised in the task comes back as itself (same class), its message naming that file; anything
    else as a RankbiasError of one line."""
    log = log_ray_error(str(exc), results)
    where = f": {log}" if log else " not saved: no writable log file"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RankbiasError):
        cause.args = (f"{cause} (Ray traceback{where})",)
        return cause
    what = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(exc)
    line = next((x.strip() for x in what.splitlines() if x.strip()), type(exc).__name__)
    return RankbiasError(f"a Ray task failed: {line[:300]} (Ray traceback{where})")


def log_ray_error(text: str, results: str) -> Path | None:
    """Append ``text`` with a timestamp to ``<results>/ray-errors.log``, or, where that cannot be
    written (a full or read-only disk), to ``rankbias-ray-errors.log`` in the temp folder.
    Returns the file written, or None."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).rstrip()  # Ray colours the task's name
    entry = f"--- {time.strftime('%Y-%m-%d %H:%M:%S %z')} a Ray task failed; its remote traceback:\n{text}\n\n"
    for path in (Path(results) / RAY_ERROR_LOG, Path(tempfile.gettempdir()) / f"rankbias-{RAY_ERROR_LOG}"):
        try:
            with path.open("a") as log:
                log.write(entry)
            return path
        except OSError:
            continue
    return None


def _ray_cohort(task: Task, threads: int) -> list[Outcome]:
    import torch

    torch.set_num_threads(threads)
    if task.engine.device.startswith("cuda"):  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
        task = dataclasses.replace(task, engine=dataclasses.replace(task.engine, device="cuda"))
    return train_cohort(task)
