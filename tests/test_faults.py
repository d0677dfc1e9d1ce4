"""Faults and concurrency: SIGKILL and resume, failure isolation, --fail-fast, two sweeps on one
directory, locks, a full or unwritable results directory, schema versions, provenance."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import rankbias as rb
from rankbias.errors import SchemaError, StoreError
from rankbias.store import RunStore
from rankbias.store.lock import RunLock, lock_owner
from rankbias.store.schema import SCHEMA_KEY
from rankbias.training.engine import CohortTrainer

from .test_engine import assert_same_records

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """\
model: mlp-bn-2-16
data: {name: digits, train_size: 256, test_size: 64}
optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 5.0e-3}
train: {epochs: 6}
sweep:
  train.batch_size: %s
  seeds: 2
"""


def write_sweep(path: Path, batch_sizes) -> Path:
    path.write_text(SWEEP % list(batch_sizes))
    return path


def command(config: Path, results: Path, *extra) -> list[str]:
    return [
        sys.executable, "-m", "rankbias", "run", str(config),
        "--results", str(results), "--threads", "1", "--no-progress", *extra,
    ]


def environment(tmp_path) -> dict:
    return os.environ | {"RANKBIAS_OFFLINE": "1", "RANKBIAS_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep over batch sizes 32, 64, 128 (two seeds): 6 runs, 3 cohorts."""
    tmp = tmp_path_factory.mktemp("reference")
    configs = rb.load_configs(write_sweep(tmp / "sweep.yaml", [32, 64, 128]))
    rb.train(configs, tmp / "results", jobs=1, threads=1)
    return tmp / "results", configs


def records_on_disk(results: Path) -> int:
    return sum(1 for _ in results.glob("*/scalars/e*.parquet")) + 7 * sum(1 for _ in results.glob("*/scalars.parquet"))


def kill_when(cmd, env, results: Path, ready, timeout=120.0) -> bool:
    """Start ``cmd`` in its own process group, SIGKILL the group once ``ready()``; True if killed."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sigkill_at_several_points_then_rerun_gives_the_uninterrupted_records(tmp_path, reference):
    ref_results, configs = reference
    config = write_sweep(tmp_path / "sweep.yaml", [32, 64, 128])
    results, env = tmp_path / "results", environment(tmp_path)
    # three kills: after the first records, mid-sweep, late; with one process and with two workers
    points = [(1, ()), (10, ("--jobs", "2")), (24, ())]  # of 42 records
    killed = 0
    for records, extra in points:
        killed += kill_when(
            command(config, results, *extra), env, results, lambda n=records: records_on_disk(results) >= n
        )
        states = [(RunStore(results, c.run_id()).status() or {}).get("state") for c in configs]
        assert states.count("done") < len(configs)  # the kill interrupted the sweep
    assert killed == len(points)
    runs = rb.train(configs, results, jobs=1, threads=1)
    assert [r.state for r in runs] == ["done"] * len(configs)
    for c in configs:
        assert_same_records(ref_results, results, c.run_id())
        assert lock_owner(results / c.run_id()) is None


def test_two_sweeps_at_once_share_a_directory_without_training_a_run_twice(tmp_path, reference):
    ref_results, configs = reference
    results, env = tmp_path / "results", environment(tmp_path)
    first = write_sweep(tmp_path / "a.yaml", [32, 64])
    second = write_sweep(tmp_path / "b.yaml", [64, 128])  # batch size 64 is in both
    procs = [
        subprocess.Popen(command(c, results, "--jobs", "1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in (first, second)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for c in configs:
        assert_same_records(ref_results, results, c.run_id())
        provenance = json.loads((results / c.run_id() / "provenance.json").read_text())
        assert provenance["sessions"] == 1 and provenance["end_state"] == "done"  # trained once, by one sweep


def test_a_lock_of_a_dead_process_is_taken_over_a_live_one_is_not(tmp_path):
    run_dir = tmp_path / "results" / "abc"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir.mkdir(parents=True)
    (run_dir / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0}))
    assert lock_owner(run_dir)["stale"]
    with RunLock(run_dir) as lock:
        assert lock.acquire() and lock_owner(run_dir)["pid"] == os.getpid()
        assert not RunLock(run_dir).acquire()  # held by a live process (this one)
    assert lock_owner(run_dir) is None  # released
    (run_dir / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 0}))
    assert lock_owner(run_dir)["stale"]  # the pid was reused by a process started after the lock
    (run_dir / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": "another-host", "time": 0}))
    assert not RunLock(run_dir).acquire()  # another host's pid means nothing here: never taken over
    assert not list(run_dir.glob("*.tmp"))


def test_a_finished_runs_stale_lock_is_cleared_by_the_next_sweep(tmp_path):
    """A sweep killed after a run finished but before it released the lock leaves a stale lock on
    a done run; the next sweep over it removes that lock (and leaves a live one alone)."""
    from .conftest import small_config

    config = small_config(**{"train.epochs": 1})
    results = tmp_path / "results"
    rb.train(config, results)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file = results / config.run_id() / "run.lock"
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0}))
    assert rb.train(config, results).reused and not lock_file.exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_file.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "time": time.time()}))
        assert rb.train(config, results).reused and lock_owner(results / config.run_id())["pid"] == live.pid
    finally:
        live.kill()


class Boom(RuntimeError):
    pass


def test_a_failing_cohort_is_recorded_the_others_go_on_and_fail_fast_stops(tmp_path, monkeypatch):
    configs = rb.expand(
        {
            "model": "mlp-bn-2-16",
            "data": {"name": "digits", "train_size": 256, "test_size": 64},
            "train": {"epochs": 1},
            "sweep": {"train.batch_size": [16, 32, 64]},
        }
    )
    original = CohortTrainer.run

    def fails_at_batch_32(self):
        if self.config.train.batch_size == 32:
            raise Boom("exploded at batch 32")
        return original(self)

    monkeypatch.setattr(CohortTrainer, "run", fails_at_batch_32)
    runs = rb.train(configs, tmp_path / "isolated", max_cohort=1)
    assert [r.state for r in runs] == ["done", "failed", "done"]
    assert runs[1].message == "Boom: exploded at batch 32"
    stopped = rb.train(configs, tmp_path / "fast", fail_fast=True)
    assert [r.state for r in stopped] == ["done", "failed", "missing"]  # the third cohort never started
    assert not (tmp_path / "fast" / configs[2].run_id()).exists()


def test_full_disk_is_one_clear_error_and_finished_runs_stay_intact(tmp_path, monkeypatch):
    results = tmp_path / "results"
    done = rb.expand(
        {"model": "mlp-bn-2-16", "data": {"name": "digits", "train_size": 256, "test_size": 64}, "train": {"epochs": 1}}
    )[0]
    rb.train(done, results)
    before = {p: p.read_bytes() for p in (results / done.run_id()).rglob("*") if p.is_file()}
    other = done.replace(**{"train.seed": 7})
    original = RunStore.append

    def no_space(self, epoch, tables):
        if epoch >= 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, epoch, tables)

    monkeypatch.setattr(RunStore, "append", no_space)
    with pytest.raises(
        StoreError,
        match=r"cannot write under .*: No space left on device \(.* free\)\. Records already stored are intact",
    ):
        rb.train([done, other], results)
    assert {p: p.read_bytes() for p in (results / done.run_id()).rglob("*") if p.is_file()} == before
    assert lock_owner(results / other.run_id()) is None  # the lock is released
    monkeypatch.setattr(RunStore, "append", original)
    assert rb.train(other, results).state == "done"  # resumes once there is space


def test_an_unwritable_results_directory_stops_before_training(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the results directory should be")
    config = rb.expand(
        {"model": "mlp-bn-2-16", "data": {"name": "digits", "train_size": 256, "test_size": 64}, "train": {"epochs": 1}}
    )[0]
    with pytest.raises(StoreError, match=r"cannot write the results directory .*not-a-directory/sub"):
        rb.train(config, blocker / "sub")
    assert blocker.read_text().startswith("a file")


def test_records_of_another_schema_version_are_refused_with_a_clear_message(tmp_path, reference):
    ref_results, configs = reference
    results = tmp_path / "results"
    run_id = configs[0].run_id()
    os.makedirs(results)
    subprocess.run(["cp", "-r", str(ref_results / run_id), str(results / run_id)], check=True)
    path = results / run_id / "layers.parquet"
    assert pq.read_schema(path).metadata[SCHEMA_KEY] == b"1"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({SCHEMA_KEY: b"2"}), path)
    with pytest.raises(
        SchemaError,
        match=r"layers.parquet holds records of schema version 2, newer than the version 1 this rankbias reads: "
        r"upgrade rankbias",
    ):
        rb.load(results)
    with pytest.raises(SchemaError, match="schema version 2, newer"):
        rb.query(results, "select count(*) from layers")
    pq.write_table(table.replace_schema_metadata({SCHEMA_KEY: b"0"}), path)
    with pytest.raises(SchemaError, match="schema version 0, older than the version 1"):
        rb.load(results)
    pq.write_table(table.replace_schema_metadata({}), path)  # unversioned files have the first layout
    assert len(rb.load(results).layers) == len(table)


def test_provenance_says_how_each_run_was_made(reference):
    ref_results, configs = reference
    record = json.loads((ref_results / configs[0].run_id() / "provenance.json").read_text())
    for key in (
        "rankbias_version", "git_commit", "schema_version", "python_version", "torch_version", "numpy_version",
        "device", "device_name", "torch_threads", "tf32", "hostname", "start_time", "end_time",
    ):
        assert key in record, key
    assert record["rankbias_version"] == rb.__version__ and record["device"] == "cpu" and record["torch_threads"] == 1
    assert record["tf32"] is False  # TensorFloat-32 only ever on a GPU, and only when asked
    assert record["hostname"] == socket.gethostname() and record["start_time"] <= record["end_time"]
    assert record["git_commit"] is None or len(record["git_commit"]) >= 40
    assert all(not isinstance(v, (dict, list)) for v in record.values())  # flat
