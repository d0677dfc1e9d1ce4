"""The Ray executor on a real two-worker local cluster gives the local executor's records, a
task whose worker dies is retried and resumes, an address that does not answer fails within
``RAY_CONNECT_TIMEOUT``, and a task that raises is one line with its traceback in a log."""

import json
import os
import signal
import socket
import tempfile
import threading
import time

import pytest

import rankbias as rb
from rankbias.errors import RankbiasError, StoreError
from rankbias.options import EngineOptions
from rankbias.store import lock_owner
from rankbias.sweep.executors import RAY_CONNECT_TIMEOUT, check_ray_address, run_ray
from rankbias.sweep.worker import Task

from .conftest import small_config
from .test_engine import assert_same_records

ray = pytest.importorskip("ray", reason="Ray is in the test extras: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_tasks_give_the_records_of_the_local_executor(tmp_path, cluster):
    configs = [
        small_config(**{"train.seed": s, "train.batch_size": b, "train.epochs": 2}) for s in (0, 1) for b in (32, 64)
    ]
    local = rb.train(configs, tmp_path / "local", jobs=2, threads=1)
    remote = rb.train(configs, tmp_path / "ray", executor="ray", jobs=2, threads=1)
    assert [r.state for r in remote] == ["done"] * 4 and [r.run_id for r in remote] == [r.run_id for r in local]
    for config in configs:
        assert_same_records(tmp_path / "local", tmp_path / "ray", config.run_id())
        assert (tmp_path / "ray" / config.run_id() / "provenance.json").exists()
    assert ray.is_initialized()  # a cluster the caller started is left running
    assert all(r.reused for r in rb.train(configs, tmp_path / "ray", executor="ray", jobs=2))


def test_a_task_whose_worker_is_killed_is_retried_and_resumes(tmp_path, cluster):
    configs = [small_config(**{"train.seed": s, "train.epochs": 20}) for s in (0, 1)]
    rb.train(configs, tmp_path / "local", threads=1)
    results = tmp_path / "ray"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(runs=rb.train(configs, results, executor="ray", threads=1)))
    thread.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:  # the worker's pid is in the run's lock
        owner = lock_owner(results / configs[0].run_id())
        if (
            owner
            and owner["pid"] != os.getpid()
            and list((results / configs[0].run_id()).glob("scalars/e000002.parquet"))
        ):
            victim = owner["pid"]
        time.sleep(0.01)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=240)
    assert [r.state for r in outcome["runs"]] == ["done", "done"]
    provenance = json.loads((results / configs[0].run_id() / "provenance.json").read_text())
    assert provenance["sessions"] == 2  # the retried task resumed the run from its checkpoint
    for config in configs:
        assert_same_records(tmp_path / "local", results, config.run_id())


def test_an_address_that_does_not_answer_fails_within_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as from the command line, whatever ran before
    start = time.monotonic()
    with pytest.raises(RankbiasError) as info:
        rb.train([small_config()], tmp_path, executor="ray", address="127.0.0.1:1", threads=1)
    assert time.monotonic() - start < RAY_CONNECT_TIMEOUT + 5
    assert str(info.value) == (
        f"no Ray cluster answers at 127.0.0.1:1 within {RAY_CONNECT_TIMEOUT} s: "
        "start one (ray start --head) or leave --address out for a local Ray"
    )
    assert not list(tmp_path.glob("*/status.json"))  # nothing trained


def test_a_port_that_accepts_nothing_fails_after_the_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # a backlog of one, never accepted: once it is full, connecting waits
    port = server.getsockname()[1]
    queued = [socket.socket() for _ in range(3)]
    for s in queued:
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
    try:
        start = time.monotonic()
        with pytest.raises(RankbiasError, match=rf"no Ray cluster answers at ray://127.0.0.1:{port} within 1 s"):
            check_ray_address(f"ray://127.0.0.1:{port}", "leave --address out", timeout=1)
        assert 0.5 < time.monotonic() - start < 5
    finally:
        for s in (*queued, server):
            s.close()
    for address in (None, "auto", "local"):  # left to Ray
        check_ray_address(address, "")


def test_a_task_raising_a_store_error_is_one_line_and_its_traceback_is_logged(tmp_path, cluster, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the log's place when the results cannot hold it
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # results under a regular file: the worker's mkdir fails (ENOTDIR)
    task = Task([small_config().to_dict()], str(blocker / "results"), EngineOptions(device="cpu"))
    with pytest.raises(StoreError) as info:
        list(run_ray([task], None, 1))
    log = tmp_path / "rankbias-ray-errors.log"
    message = str(info.value)
    assert type(info.value) is StoreError and "\n" not in message and "Traceback" not in message
    assert message.startswith(f"cannot write under {blocker / 'results'}")
    assert message.endswith(f" (Ray traceback: {log})")
    text = log.read_text()
    assert text.startswith("--- ") and "remote traceback:\nray::_ray_cohort()" in text and "\x1b" not in text
    assert "NotADirectoryError" in text and "in _acquire\n" in text and "rankbias.errors.StoreError: cannot" in text


def test_a_task_raising_anything_else_is_one_rankbias_error_line(tmp_path, cluster):
    task = Task([], str(tmp_path), EngineOptions(device="cpu"))  # no configs: IndexError in the task
    with pytest.raises(RankbiasError) as info:
        list(run_ray([task, task], None, 1))
    log = tmp_path / "ray-errors.log"
    assert str(info.value).startswith("a Ray task failed: IndexError: list index out of range")
    assert str(info.value).endswith(f" (Ray traceback: {log})") and "\n" not in str(info.value)
    assert "in train_cohort\n" in log.read_text() and "IndexError: list index out of range" in log.read_text()
