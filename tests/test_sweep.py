"""Sweeps: zip/seeds expansion and validation, cohort sizing, worker processes, dry run, progress."""

import io
import re
import time

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.data import load_dataset
from rankbias.models import build_model
from rankbias.options import SweepOptions
from rankbias.store.run_store import RunStore
from rankbias.sweep import plan_sweep
from rankbias.sweep import progress as progress_module
from rankbias.sweep.plan import estimate_bytes, forward_cost, split_evenly
from rankbias.sweep.progress import SweepProgress, Work

from .conftest import small_config
from .test_engine import assert_same_records

BASE = {
    "model": "mlp-bn-2-16",
    "data": {"name": "digits", "train_size": 256, "test_size": 64},
    "train": {"epochs": 2, "seed": 10},
}


def swept(sweep: dict, overrides=()) -> list[rb.RunConfig]:
    return rb.expand({**BASE, "sweep": sweep}, list(overrides))


def test_zip_and_seeds_expand_with_the_cartesian_axes():
    configs = swept(
        {
            "train.batch_size": [16, 32],
            "zip": {"optimizer.lr": [0.1, 0.01], "optimizer.weight_decay": [0.0, 5e-3]},
            "seeds": 3,
        }
    )
    points = {(c.train.batch_size, c.optimizer.lr, c.optimizer.weight_decay, c.train.seed) for c in configs}
    assert len(configs) == len(points) == 2 * 2 * 3
    assert {(lr, wd) for _, lr, wd, _ in points} == {(0.1, 0.0), (0.01, 5e-3)}  # zipped, not crossed
    assert {s for *_, s in points} == {10, 11, 12}  # base seed + 0, 1, 2
    two_zips = swept(
        {
            "zip": [
                {"optimizer.lr": [0.1, 0.2]},
                {"train.batch_size": [8, 16, 32], "optimizer.momentum": [0.0, 0.5, 0.9]},
            ]
        }
    )
    assert len(two_zips) == 6
    # an override pins one key of a zip group; the others still vary
    pinned = swept({"zip": {"optimizer.lr": [0.1, 0.01], "optimizer.weight_decay": [0.0, 5e-3]}}, ["optimizer.lr=0.3"])
    assert [(c.optimizer.lr, c.optimizer.weight_decay) for c in pinned] == [(0.3, 0.0), (0.3, 5e-3)]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            {"zip": {"optimizer.lr": [0.1, 0.2], "optimizer.momentum": [0.0]}},
            r"sweep.zip: zipped lists must have one length: optimizer.lr has 2, optimizer.momentum has 1",
        ),
        ({"seeds": 0}, r"sweep.seeds: must be a positive number of repeats, got 0"),
        ({"seeds": 2, "train.seed": [1, 2]}, r"sweep.seeds: cannot be combined with a swept or overridden train.seed"),
        ({"zip": {"optimizer.lr": []}}, r"sweep.zip.optimizer.lr: must be a non-empty list"),
        # the first bad run is named by its swept values
        (
            {"train.batch_size": [16, 32], "optimizer.momentum": [0.5, 1.5]},
            (
                r"optimizer.momentum: must be in \[0, 1\), got 1.5 "
                r"\(in the run with train.batch_size=16, optimizer.momentum=1.5\)"
            ),
        ),
        (
            {"zip": {"optimizer.lr": [0.1, -1.0], "train.batch_size": [8, 16]}},
            r"optimizer.lr: must be > 0, got -1.0 \(in the run with optimizer.lr=-1.0, train.batch_size=16\)",
        ),
    ],
)
def test_bad_sweeps_are_one_clear_error(sweep, message):
    with pytest.raises(rb.ConfigError, match=message):
        swept(sweep)


def test_a_run_bad_for_its_data_is_named_before_anything_trains(tmp_path):
    configs = swept({"train.batch_size": [32, 512]})
    with pytest.raises(
        rb.ConfigError,
        match=r"train.batch_size: 512 is larger than the training set \(256 samples\) "
        r"\(in the run with train.batch_size=512\)",
    ):
        rb.train(configs, tmp_path / "results", jobs=2)
    assert not (tmp_path / "results").exists()


def test_memory_estimate_counts_parameters_gradients_momentum_and_activations():
    config = small_config()
    data = load_dataset(config.data)
    one, two, four = (estimate_bytes(config, r, data) for r in (1, 2, 4))
    assert four - two == pytest.approx(2 * (two - one), rel=1e-6)  # linear in the members
    model = build_model(config.model, 1, data.input_shape, 10)
    params = sum(p.numel() for p in model.parameters())
    batch, width = config.train.batch_size, 16
    # per member: 3 copies of the parameters, and at least every hidden layer's outputs (x2)
    assert two - one >= 4 * (3 * params + 2 * batch * width * 2)
    assert two - one < 4 * (3 * params + 2 * batch * (64 + 10 * width)) + 8 * 256 + 4 * 256 * 64


def test_cohorts_are_cut_to_the_memory_cap_and_feed_every_worker(tmp_path):
    configs = [small_config(**{"train.seed": s}) for s in range(7)] + [
        small_config(**{"train.seed": s, "train.batch_size": 64}) for s in range(2)
    ]
    datasets = {configs[0].data: load_dataset(configs[0].data)}
    data = datasets[configs[0].data]
    big = plan_sweep(configs, tmp_path, datasets, SweepOptions(memory_cap=1 << 40))
    assert sorted(len(c.configs) for c in big.cohorts) == [2, 7]  # one cohort per cohort key
    cap = estimate_bytes(configs[0], 3, data)
    capped = plan_sweep(configs, tmp_path, datasets, SweepOptions(memory_cap=cap))
    sizes = sorted(len(c.configs) for c in capped.cohorts if c.configs[0].train.batch_size == 32)
    assert sizes == [2, 2, 3] and all(c.bytes <= cap for c in capped.cohorts)  # 7 in three near-equal cohorts
    tiny = plan_sweep(configs, tmp_path, datasets, SweepOptions(memory_cap=1))  # below one run: cohorts of one
    assert all(len(c.configs) == 1 for c in tiny.cohorts) and len(tiny.cohorts) == 9
    workers = plan_sweep(configs[:4], tmp_path, datasets, SweepOptions(jobs=3, memory_cap=1 << 40))
    assert sorted(len(c.configs) for c in workers.cohorts) == [1, 1, 2]  # split so that 3 workers have work
    assert split_evenly(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.fixture(scope="module")
def four_runs():
    return [
        small_config(**{"train.seed": s, "train.batch_size": b, "train.epochs": 2}) for s in (0, 1) for b in (32, 64)
    ]


def test_two_worker_processes_give_the_records_of_one(tmp_path, four_runs, monkeypatch):
    monkeypatch.setattr("rankbias.sweep.cores", lambda: 8)  # workers still default to one thread (not cores ÷ workers)
    one = rb.train(four_runs, tmp_path / "one", jobs=1, threads=1)
    two = rb.train(four_runs, tmp_path / "two", jobs=2)
    assert [r.state for r in two] == ["done"] * 4 and not any(r.reused for r in two)
    assert [r.run_id for r in one] == [r.run_id for r in two]
    for config in four_runs:
        assert_same_records(tmp_path / "one", tmp_path / "two", config.run_id())
    provenance = (tmp_path / "two" / four_runs[0].run_id() / "provenance.json").read_text()
    assert '"torch_threads": 1' in provenance
    again = rb.train(four_runs, tmp_path / "two", jobs=2)
    assert all(r.reused for r in again)


def test_dry_run_prints_cohorts_and_trains_nothing(tmp_path, four_runs):
    rb.train(four_runs[0], tmp_path / "results")
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "model: mlp-bn-2-16\ndata: {name: digits, train_size: 256, test_size: 64}\n"
        "optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 5.0e-3}\ntrain: {epochs: 2}\n"
        "sweep:\n  train.batch_size: [32, 64]\n  seeds: 2\n"
    )
    before = sorted(p.name for p in (tmp_path / "results").iterdir())
    out = CliRunner().invoke(
        main, ["run", str(path), "--results", str(tmp_path / "results"), "--dry-run", "--jobs", "2"]
    )
    assert out.exit_code == 0, out.output
    assert "4 run(s): 3 to train in 2 cohort(s), 1 already finished" in out.output
    assert "done: reused" in out.output and out.output.count(" new ") == 3 and "train.batch_size" in out.output
    assert four_runs[0].run_id() in out.output and four_runs[1].run_id() in out.output
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == before


def _work(tmp_path, name: str, epoch_flops: float, epochs: int = 10, start: int = 0) -> tuple[str, Work]:
    return name, Work(tmp_path / name, epoch_flops, start, epochs)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_progress_in_a_log_comes_while_cohorts_train_weighted_by_cost(tmp_path):
    """A log gets a first line at once, then lines on a timer without any cohort finishing; the
    share done is read from the runs' recorded epochs and weighted by each run's estimated cost."""
    stream = io.StringIO()
    work = dict([_work(tmp_path, "cheap", 1e9), _work(tmp_path, "dear", 3e9)])  # FLOPs per epoch, 10 epochs each
    progress = SweepProgress(3, stream=stream, interval=0.05)
    progress.update(["reused"])  # finished before the sweep: counted, no work
    progress.begin(work, "training 2 cohort(s) on 2 worker process(es) at once, 1 torch thread(s) each")
    first = _lines(stream)[0]
    assert re.match(r"\d\d:\d\d:\d\d training 2 cohort\(s\) on 2 worker", first)  # time of day, then what trains
    assert "2 run(s) to train, 1 of 3 already done, estimated work 40 GFLOP" in first
    RunStore(tmp_path, "dear").set_status("running", 5)  # the expensive run recorded epoch 5 of 10
    time.sleep(0.4)
    lines = _lines(stream)[1:]
    assert len(lines) >= 2, lines  # no cohort finished, yet lines came
    assert "sweep: 1/3 runs done, 38 % of the estimated work" in lines[-1]  # 15 of 40 GFLOP; by runs it would be 0
    assert "remaining" in lines[-1]
    progress.update(["cheap", "dear"], failed=1)
    progress.close()
    assert re.search(r"sweep: 3/3 runs done \(1 failed\), \d:\d\d:\d\d elapsed$", _lines(stream)[-1])
    count = len(_lines(stream))
    time.sleep(0.15)
    assert len(_lines(stream)) == count  # closed: no more lines


def test_time_left_comes_from_the_work_left_not_from_run_counts(tmp_path):
    progress = SweepProgress(2, stream=io.StringIO(), enabled=False)
    progress.begin(dict([_work(tmp_path, "small", 1e6), _work(tmp_path, "large", 9e6)]), "training")
    progress.start -= 100  # 100 s ago
    progress.update(["small"])  # 1 of 10 units of work in 100 s; half the runs
    done, total, left = progress.estimate()
    assert (done, total) == (1e7, 1e8) and left == pytest.approx(900, rel=0.01)  # by runs: 100 s
    RunStore(tmp_path, "large").set_status("running", 5)
    assert progress.estimate()[0] == 1e7 + 4.5e7


def test_progress_ignores_statuses_older_than_the_sweep(tmp_path):
    RunStore(tmp_path, "old").set_status("done", 10)  # e.g. a run about to be retrained with force
    progress = SweepProgress(1, stream=io.StringIO(), enabled=False)
    progress.begin(dict([_work(tmp_path, "old", 1e6)]), "training")
    assert progress.estimate()[0] == 0 and progress.estimate()[2] is None
    assert "time left known after the first record" in progress.line()


def test_progress_on_a_terminal_is_a_bar_with_the_estimate(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = SweepProgress(2, stream=stream, interval=0.05)
    progress.begin(dict([_work(tmp_path, "a", 1e6), _work(tmp_path, "b", 3e6)]), "training 2 cohort(s)")
    assert progress.bar is not None
    progress.update(["a"])
    assert "1/2 runs" in stream.getvalue() and "25 % of the work" in stream.getvalue()
    progress.close()
    assert not re.search(r"^\d\d:\d\d:\d\d sweep:", stream.getvalue(), re.MULTILINE)  # no log lines on a terminal


def test_a_sweep_logs_progress_before_its_first_cohort_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.05)
    configs = swept({"train.batch_size": [16, 32], "seeds": 2}, ["train.epochs=30", "record.every=1"])
    rb.train(configs, tmp_path / "results", jobs=1, device="cpu", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert "training 2 cohort(s) in this process, 1 torch thread(s) each: 4 run(s) to train" in lines[0]
    shares = [int(m.group(1)) for line in lines if (m := re.search(r"0/4 runs done, (\d+) % of", line))]
    assert any(0 < share < 100 for share in shares), lines  # epochs recorded inside the first cohort, seen
    assert "sweep: 4/4 runs done" in lines[-1]


def test_cohorts_carry_their_estimated_work_and_the_largest_goes_first(tmp_path):
    configs = swept({"train.batch_size": [16, 64], "model": ["mlp-bn-2-16", "mlp-bn-2-64"]})
    data = load_dataset(configs[0].data)
    plan = plan_sweep(configs, tmp_path, {configs[0].data: data})
    works = [c.flops for c in plan.cohorts]
    assert works == sorted(works, reverse=True) and len(set(works)) == 4
    small = [c for c in plan.cohorts if c.configs[0].model.name == "mlp-bn-2-16"]
    per_sample, layers = forward_cost(small[0].configs[0], data)
    assert per_sample == 2 * (64 * 16 + 16 * 16 + 16 * 10) and layers > 0  # multiply-adds of the 3 linear maps
    b16, b64 = sorted(small, key=lambda c: c.configs[0].train.batch_size)
    assert b16.epoch_flops > b64.epoch_flops  # the same arithmetic in 4 times the steps
