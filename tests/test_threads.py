"""The thread policy: one torch thread per training process unless ``threads`` is given,
in the calling process (restored afterwards), in worker processes (also tests/test_sweep.py's
two-worker test, with real processes) and in Ray tasks; provenance records the threads a run
trained with."""

import json

import pytest
import torch
from click.testing import CliRunner

import rankbias as rb
from rankbias import sweep
from rankbias.cli import main
from rankbias.errors import ConfigError
from rankbias.options import EngineOptions
from rankbias.sweep.executors import run_inline

from .conftest import small_config


def tiny(**overrides) -> rb.RunConfig:
    """One epoch of two steps: at two threads on a busy machine even this takes a while."""
    return small_config(**{"data.train_size": 64, "data.test_size": 32, "train.epochs": 1, **overrides})


def trained_threads(results, config) -> int:
    return json.loads((results / config.run_id() / "provenance.json").read_text())["torch_threads"]


@pytest.fixture
def two_caller_threads():
    """The caller runs torch at 2 threads (the setting a 2-core machine starts with)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_default_threads_is_one_unless_asked():
    assert sweep.default_threads() == 1 and sweep.default_threads(None) == 1 and sweep.default_threads(3) == 3
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="threads: must be a whole number"):
            EngineOptions(threads=bad)


def test_a_bad_thread_count_stops_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="threads"):
        rb.train(small_config(), tmp_path / "results", threads=0)
    assert not (tmp_path / "results").exists()


def test_inline_run_trains_with_one_thread_and_restores_the_callers(tmp_path, two_caller_threads):
    config = tiny()
    run = rb.train(config, tmp_path / "results")
    assert run.state == "done" and trained_threads(tmp_path / "results", config) == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(3)  # not a count taken from the caller (overriding: the tests below)
    rb.train(config, tmp_path / "results", force=True)
    assert trained_threads(tmp_path / "results", config) == 1 and torch.get_num_threads() == 3


def test_command_line_threads_override_the_default(tmp_path, two_caller_threads):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: mlp-bn-2-16\ndata: {name: digits, train_size: 64, test_size: 32}\ntrain: {batch_size: 32, epochs: 1}\n"
    )
    runner = CliRunner()
    for extra, expected in (([], 1), (["--threads", "2", "--force"], 2)):
        out = runner.invoke(main, ["run", str(config), "--results", str(tmp_path / "results"), *extra])
        assert out.exit_code == 0, out.output
        assert f"training 1 cohort(s) in this process, {expected} torch thread(s) each" in out.stderr
        (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
        assert json.loads((run_dir / "provenance.json").read_text())["torch_threads"] == expected


def _fake_executor(calls):
    """Stands in for a worker pool or Ray: records the thread count it is given and trains in
    this process at that count, as ``init_worker`` / ``_ray_cohort`` do."""

    def run(tasks, *args):
        threads = args[-1]
        calls.append(threads)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield from run_inline(tasks)
        finally:
            torch.set_num_threads(before)

    return run


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_every_executor_gets_the_policy(tmp_path, monkeypatch, executor, two_caller_threads):
    calls: list[int] = []
    monkeypatch.setattr(sweep, "cores", lambda: 8)
    monkeypatch.setattr(sweep, "run_local" if executor == "local" else "run_ray", _fake_executor(calls))
    configs = [tiny(**{"train.batch_size": b}) for b in (16, 32)]  # two cohorts
    rb.train(configs, tmp_path / "default", jobs=2, executor=executor)
    rb.train(configs, tmp_path / "asked", jobs=2, executor=executor, threads=3)
    assert calls == [1, 3]
    assert [trained_threads(tmp_path / "default", c) for c in configs] == [1, 1]
    assert [trained_threads(tmp_path / "asked", c) for c in configs] == [3, 3]
