"""Sweeps: zip/seeds expansion and validation, cohort sizing, worker processes, dry run, progress."""

import io

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.data import load_dataset
from rankbias.models import build_model
from rankbias.options import SweepOptions
from rankbias.sweep import plan_sweep
from rankbias.sweep.plan import estimate_bytes, split_evenly
from rankbias.sweep.progress import SweepProgress

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


def test_progress_is_log_lines_when_not_a_terminal(monkeypatch):
    stream = io.StringIO()
    progress = SweepProgress(10, stream=stream, interval=0.0)
    progress.update(4)
    progress.update(3, failed=1)
    progress.update(3)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("sweep: 4/10 runs done, 0:00:00 elapsed, ~0:00:00 remaining")
    assert lines[1].startswith("sweep: 7/10 runs done (1 failed)") and lines[2].startswith(
        "sweep: 10/10 runs done (1 failed)"
    )
    quiet = io.StringIO()
    slow = SweepProgress(10, stream=quiet, interval=3600.0)
    slow.update(1)
    slow.update(9)
    assert quiet.getvalue().count("\n") == 1 and "10/10" in quiet.getvalue()  # only the final line
