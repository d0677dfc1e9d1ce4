"""The Ray executor on a real two-worker local cluster gives the local executor's records, and a
task whose worker dies is retried and resumes."""

import json
import os
import signal
import threading
import time

import pytest

import rankbias as rb
from rankbias.store import lock_owner

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
