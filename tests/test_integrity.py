"""A damaged file costs one run, never the folder: readers name it and read the rest, the next
sweep retrains it, and the records end equal to an uninterrupted sweep's."""

import json
import shutil

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.errors import DamagedError, DamagedRunWarning
from rankbias.store import RunStore
from rankbias.store.integrity import recorded_epochs, scan
from rankbias.training.engine import CohortTrainer

from .conftest import small_config
from .test_engine import assert_same_records

# one run per cohort (batch sizes differ): a damaged run never shares a model with a healthy one
CONFIGS = [small_config(**{"train.batch_size": b, "train.epochs": 4}) for b in (16, 32, 64, 128)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    results = tmp_path_factory.mktemp("reference")
    rb.train(CONFIGS, results)
    return results


def interrupted(results, config, monkeypatch, at_epoch=3):
    """Train ``config`` until it fails at ``at_epoch`` (its records and checkpoint stop at the epoch before)."""
    original = CohortTrainer._train_epoch

    def fail(self, *args):
        if self.epoch == at_epoch:
            raise RuntimeError("interrupted")
        return original(self, *args)

    monkeypatch.setattr(CohortTrainer, "_train_epoch", fail)
    run = rb.train(config, results)
    monkeypatch.setattr(CohortTrainer, "_train_epoch", original)
    assert run.state == "failed" and run.epoch == at_epoch - 1
    return run


def damaged_sweep(tmp_path, monkeypatch):
    """The four runs, one with a truncated scalars.parquet, one unfinished with a zeroed checkpoint,
    one with a malformed status.json, one healthy."""
    results = tmp_path / "results"
    truncated, unfinished, malformed, healthy = (RunStore(results, c.run_id()) for c in CONFIGS)
    rb.train([CONFIGS[0], CONFIGS[2], CONFIGS[3]], results)
    interrupted(results, CONFIGS[1], monkeypatch)
    data = (truncated.dir / "scalars.parquet").read_bytes()
    (truncated.dir / "scalars.parquet").write_bytes(data[: len(data) // 2])
    (unfinished.dir / "checkpoint.pt").write_bytes(b"")
    (malformed.dir / "status.json").write_text("{not json")
    return results, {"scalars.parquet": truncated, "checkpoint.pt": unfinished, "status.json": malformed}, healthy


def test_readers_name_the_damaged_runs_and_read_the_healthy_one(tmp_path, monkeypatch):
    results, damaged, healthy = damaged_sweep(tmp_path, monkeypatch)
    runner = CliRunner()
    status = runner.invoke(main, ["status", str(results)])
    assert status.exit_code == 0, status.output
    assert "damaged: 3" in status.output and "Traceback" not in status.output
    for file, store in damaged.items():
        assert f"damaged {store.run_id}: {store.dir / file}" in status.output
    assert healthy.run_id in status.output
    for command in (["query", str(results), "select run_id from runs"], ["report", str(results)]):
        out = runner.invoke(main, command)
        assert out.exit_code == 0, out.output
        assert "warning: 3 damaged run(s) left out" in out.output and "Traceback" not in out.output
    assert healthy.run_id in runner.invoke(main, ["query", str(results), "select run_id from runs"]).output
    page = (results / "report.html").read_text().replace("<wbr>", "")  # the text, without its line-break hints
    assert all(str(store.dir / file) in page for file, store in damaged.items())  # its problems section
    for file, store in damaged.items():
        shown = runner.invoke(main, ["show", str(store.dir)])
        assert shown.exit_code == 2 and file in shown.output and "Traceback" not in shown.output
    with pytest.warns(DamagedRunWarning, match="3 damaged run"):
        records = rb.load(results)
    assert list(records.runs["run_id"]) == [healthy.run_id] and len(records.damaged) == 3
    assert set(records.scalars["run_id"]) == {healthy.run_id}


def test_running_the_sweep_again_retrains_exactly_the_damaged_runs(tmp_path, monkeypatch, reference):
    results, damaged, healthy = damaged_sweep(tmp_path, monkeypatch)
    before = (healthy.dir / "scalars.parquet").stat().st_mtime_ns
    plan = rb.api.plan(CONFIGS, results)
    assert set(plan.damaged) == {s.run_id for s in damaged.values()}
    runs = rb.train(CONFIGS, results)
    assert [r.state for r in runs] == ["done"] * 4
    assert (healthy.dir / "scalars.parquet").stat().st_mtime_ns == before  # reused, untouched
    assert not scan([r.path for r in runs]).damaged
    for config in CONFIGS:
        assert_same_records(reference, results, config.run_id())


@pytest.mark.parametrize("damage", ["deleted part", "random part", "zero-byte merged", "bit-flipped merged"])
def test_every_kind_of_damaged_records_is_found_and_repaired(tmp_path, monkeypatch, reference, damage):
    config = CONFIGS[1]
    results = tmp_path / "results"
    store = RunStore(results, config.run_id())
    if "part" in damage:
        interrupted(results, config, monkeypatch)  # records in per-epoch part files, epochs 0-2
        part = store.dir / "scalars" / "e000001.parquet"
        part.unlink() if damage == "deleted part" else part.write_bytes(bytes(range(256)) * 8)
        expected = "epoch(s) 1 missing" if damage == "deleted part" else "unreadable Parquet file"
    else:
        rb.train(config, results)
        merged = store.dir / "layers.parquet"
        data = bytearray(merged.read_bytes())
        if damage == "zero-byte merged":
            data = bytearray()
        else:
            data[len(data) // 2] ^= 0xFF  # in the column data: the footer still reads, the values do not
            data[-12] ^= 0xFF  # and in the footer's metadata length
        merged.write_bytes(bytes(data))
        expected = "layers.parquet"
    assert expected in str(scan([store.dir]).damaged[store.dir])
    with pytest.raises(DamagedError, match="layers.parquet|scalars"):
        rb.load(store.dir)
    run = rb.train(config, results)
    assert run.state == "done" and not scan([store.dir]).damaged
    assert_same_records(reference, results, config.run_id())


def test_an_unreadable_checkpoint_is_treated_as_missing_and_named(tmp_path, monkeypatch, reference):
    config = CONFIGS[2]
    results = tmp_path / "results"
    interrupted(results, config, monkeypatch)
    store = RunStore(results, config.run_id())
    for garbage in (b"", b"PK\x03\x04 not a checkpoint", bytes(range(256)) * 4):
        (store.dir / "checkpoint.pt").write_bytes(garbage)
        with pytest.raises(DamagedError, match="checkpoint.pt"):
            store.load_checkpoint()
        assert "checkpoint.pt" in rb.api.plan([config], results).damaged[config.run_id()]
    run = rb.train(config, results)
    assert run.state == "done"
    assert_same_records(reference, results, config.run_id())


def test_a_merge_interrupted_after_done_is_finished_by_the_next_sweep(tmp_path, reference):
    config = CONFIGS[0]
    results = tmp_path / "results"
    rb.train(config, results)
    store = RunStore(results, config.run_id())
    for name in ("scalars", "layers", "spectra"):  # as if killed between marking it done and merging
        table = store.read(name)
        (store.dir / f"{name}.parquet").unlink()
        (store.dir / name).mkdir()
        for epoch in sorted(set(table["epoch"].to_pylist())):
            store.append(epoch, {name: table.filter(table["epoch"].to_numpy() == epoch)})
    assert store.has_parts() and not scan([store.dir]).damaged  # readable as it is
    assert rb.train(config, results).reused
    assert not store.has_parts() and (store.dir / "scalars.parquet").exists()
    assert_same_records(reference, results, config.run_id())


def test_a_run_whose_records_are_not_whole_is_not_marked_done(tmp_path, monkeypatch):
    config = CONFIGS[3]
    original = RunStore.append

    def lose_epoch_2(self, epoch, tables):
        if epoch != 2:
            original(self, epoch, tables)

    monkeypatch.setattr(RunStore, "append", lose_epoch_2)
    run = rb.train(config, tmp_path / "results")
    assert run.state == "failed" and "epoch(s) 2 missing" in run.message


def test_malformed_json_files_are_named(tmp_path):
    results = tmp_path / "results"
    run = rb.train(CONFIGS[0], results)
    (run.path / "config.json").write_text("[1, 2")
    with pytest.raises(DamagedError, match="config.json: unreadable JSON"):
        rb.load(run.path)
    (run.path / "config.json").write_text(json.dumps({"optimizer": {"lr": -1}}))
    with pytest.raises(DamagedError, match="config.json: not a valid config"):
        rb.load(run.path)
    (run.path / "config.json").write_text(json.dumps(CONFIGS[0].to_dict()))
    (run.path / "status.json").write_text(json.dumps({"state": "exploded"}))
    with pytest.raises(DamagedError, match="status.json: not a run status"):
        rb.load(run.path)


def test_recorded_epochs_follow_the_engine():
    assert recorded_epochs(every=5, epochs=12, upto=12) == {0, 5, 10, 12}
    assert recorded_epochs(every=1, epochs=3, upto=2) == {0, 1, 2}
    assert recorded_epochs(every=5, epochs=12, upto=7) == {0, 5}


def test_healthy_folders_read_as_before(reference):
    found = scan(sorted(p for p in reference.iterdir() if p.is_dir()))
    assert len(found.healthy) == 4 and not found.damaged
    copy = reference.parent / "copy"
    shutil.copytree(reference, copy)
    assert rb.train(CONFIGS, copy)[0].reused


def test_status_counts_a_run_locked_before_its_config_is_written(tmp_path):
    results = tmp_path / "results"
    rb.train(CONFIGS[0], results)
    starting = results / "0123456789ab"
    starting.mkdir()
    (starting / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": 0}))
    status = CliRunner().invoke(main, ["status", str(results)])
    assert status.exit_code == 0 and "done: 1  running: 1" in status.output, status.output
