"""DuckDB views over stored runs, exports, the status counts, and the vectorized rerank."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.errors import QueryError
from rankbias.spectra.measures import rank_measures
from rankbias.store import RunStore

from .conftest import small_config


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Four finished runs (batch 32 and 64, two weight decays), one failed, one interrupted."""
    path = tmp_path_factory.mktemp("query") / "results"
    configs = [
        small_config(**{"train.batch_size": b, "optimizer.weight_decay": wd, "train.epochs": 2})
        for b in (32, 64)
        for wd in (0.0, 5e-3)
    ]
    rb.train(configs, path, threads=1)
    failed = small_config(**{"train.seed": 5, "train.epochs": 2})
    store = RunStore(path, failed.run_id())
    store.write_config(failed.to_dict())
    store.set_status("failed", None, "RuntimeError: out of memory")
    interrupted = small_config(**{"train.seed": 6, "train.epochs": 2})
    stopped = RunStore(path, interrupted.run_id())
    stopped.write_config(interrupted.to_dict())
    stopped.set_status("running", 0)
    return path, configs


def test_final_view_is_each_runs_last_record_with_its_settings(results):
    path, _configs = results
    loaded = rb.load(path)
    table = rb.query(
        path,
        'select run_id, epoch, avg_rank, test_acc, "train.batch_size", "optimizer.weight_decay", state '
        "from final order by run_id",
    )
    assert len(table) == 4 and (table["epoch"] == 2).all() and (table["state"] == "done").all()
    last = loaded.scalars[loaded.scalars.epoch == 2].set_index("run_id").loc[table["run_id"]]
    np.testing.assert_array_equal(table["avg_rank"].to_numpy(), last["avg_rank"].to_numpy())
    np.testing.assert_array_equal(table["test_acc"].to_numpy(), last["test_acc"].to_numpy())
    by_batch = rb.query(path, 'select "train.batch_size" as b, avg(avg_rank) as r from final group by 1 order by 1')
    expected = (
        last.join(loaded.runs.set_index("run_id")["train.batch_size"]).groupby("train.batch_size")["avg_rank"].mean()
    )
    np.testing.assert_allclose(by_batch["r"].to_numpy(), expected.to_numpy())
    assert by_batch["b"].tolist() == [32, 64]


def test_runs_scalars_layers_spectra_views_match_load(results):
    path, _ = results
    loaded = rb.load(path)
    runs = rb.query(path, "select * from runs order by run_id")
    assert len(runs) == 6 and {"optimizer.lr", "train.batch_size", "record.eps", "state", "message"} <= set(
        runs.columns
    )
    assert rb.query(path, "select count(*) as n from scalars")["n"][0] == len(loaded.scalars)
    layers = rb.query(path, "select run_id, epoch, layer, eps_rank from layers order by run_id, epoch, layer")
    expected = loaded.layers.sort_values(["run_id", "epoch", "layer"])[
        ["run_id", "epoch", "layer", "eps_rank"]
    ].reset_index(drop=True)
    pd.testing.assert_frame_equal(layers, expected, check_dtype=False)
    sv = rb.query(path, "select len(sv) as k from spectra where layer = 'hidden.0' limit 1")
    assert sv["k"][0] == 16
    with pytest.raises(QueryError, match="views: runs, scalars, layers, spectra, final"):
        rb.query(path, "select * from nothing_here")


def test_export_writes_every_view_as_csv_or_parquet(results, tmp_path):
    path, _ = results
    files = rb.export(path, tmp_path / "csv", "csv")
    assert sorted(f.name for f in files) == ["final.csv", "layers.csv", "runs.csv", "scalars.csv", "spectra.csv"]
    final = pd.read_csv(tmp_path / "csv" / "final.csv").sort_values("run_id").reset_index(drop=True)
    direct = rb.query(path, "select * from final order by run_id")
    np.testing.assert_allclose(final["avg_rank"], direct["avg_rank"])
    assert final["train.batch_size"].tolist() == direct["train.batch_size"].tolist()
    out = CliRunner().invoke(main, ["export", str(path), "--format", "parquet", str(tmp_path / "pq")])
    assert out.exit_code == 0, out.output
    layers = pd.read_parquet(tmp_path / "pq" / "layers.parquet")
    assert len(layers) == len(rb.load(path).layers)


def test_cli_query_and_status(results):
    path, configs = results
    runner = CliRunner()
    out = runner.invoke(
        main, ["query", str(path), 'select "train.batch_size", count(*) as n from final group by 1 order by 1']
    )
    assert out.exit_code == 0, out.output
    assert out.output.split() == ["train.batch_size", "n", "32", "2", "64", "2"]
    bad = runner.invoke(main, ["query", str(path), "select nope from final"])
    assert bad.exit_code == 2 and "error:" in bad.output and "nope" in bad.output
    status = runner.invoke(main, ["status", str(path)])
    assert status.exit_code == 0, status.output
    assert "done: 4  running: 0  pending: 1  diverged: 0  failed: 1" in status.output
    assert "RuntimeError: out of memory" in status.output and configs[0].run_id() in status.output


def test_status_counts_a_locked_run_as_running(results):
    path, configs = results
    from rankbias.store.lock import RunLock

    with RunLock(path / configs[0].run_id()) as lock:
        assert lock.acquire()
        out = CliRunner().invoke(main, ["status", str(path)])
    assert "done: 3  running: 1  pending: 1" in out.output


def row_by_row_ranks(results: rb.Results, eps, norm) -> list[int]:
    """The previous rerank, one matrix at a time: the reference the vectorized one must equal."""
    runs = results.runs.set_index("run_id")
    spectra = results.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    ranks = []
    for run_id, epoch, layer in zip(results.layers["run_id"], results.layers["epoch"], results.layers["layer"]):
        run_eps = eps if eps is not None else runs.at[run_id, "record.eps"]
        run_norm = norm if norm is not None else runs.at[run_id, "record.norm"]
        ranks.append(int(rank_measures(np.asarray(spectra.at[(run_id, epoch, layer)]), run_eps, run_norm)["eps_rank"]))
    return ranks


@pytest.mark.parametrize(("eps", "norm"), [(None, "spectral"), (1e-3, None), (0.05, "fro"), (0.2, "spectral")])
def test_vectorized_rerank_equals_row_by_row(results, eps, norm):
    path, _ = results
    loaded = rb.load(path)
    reranked = rb.rerank(loaded, eps, norm)
    assert reranked.layers["eps_rank"].tolist() == row_by_row_ranks(loaded, eps, norm)
    # ranks at the recorded ε reproduce the stored ones exactly
    same = rb.rerank(loaded, None, None)
    assert same.layers["eps_rank"].tolist() == loaded.layers["eps_rank"].tolist()
    pd.testing.assert_series_equal(
        same.scalars["avg_rank"],
        loaded.scalars.drop(columns="avg_rank").merge(same.scalars[["run_id", "epoch", "avg_rank"]])["avg_rank"],
        check_names=False,
    )


def test_reading_while_another_sweep_merges_a_runs_files(tmp_path, monkeypatch):
    """A run being written merges its per-epoch files into one (``compact``) at its end; a reader
    that listed the parts just before lists again instead of failing."""
    from rankbias.store import catalog

    from .conftest import small_config

    run = rb.train(small_config(), tmp_path / "results")
    listed = catalog.table_files
    calls = []

    def list_a_vanished_part_first(dirs, name):
        calls.append(name)
        files = listed(dirs, name)
        return files + [run.path / name / "e000002.parquet"] if calls.count(name) == 1 else files

    monkeypatch.setattr(catalog, "table_files", list_a_vanished_part_first)
    records = rb.load(tmp_path / "results")
    assert records.scalars["epoch"].tolist() == [0, 1, 2, 3] and calls.count("scalars") == 2
