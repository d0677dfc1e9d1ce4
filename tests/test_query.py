"""DuckDB views over stored runs, exports, the status counts, and the vectorized rerank; queries
only read, never fail while a sweep merges a run's files, and exports are all or nothing."""

import errno
import hashlib
import importlib
import os
import shutil
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.errors import QueryError, StoreError
from rankbias.spectra.measures import rank_measures
from rankbias.store import RunStore
from rankbias.store.schema import TABLES

from .conftest import small_config

query_module = importlib.import_module("rankbias.query")  # rankbias.query is also the function


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
    stopped.write_config(interrupted.to_dict())  # killed before its first record: no status yet
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


# -- readers never race writers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs (3 epochs each: 4 records); tests copy them and may turn one back into a
    running run (see ``as_running``)."""
    path = tmp_path_factory.mktemp("race") / "results"
    configs = [small_config(**{"train.seed": seed}) for seed in (1, 2)]
    rb.train(configs, path, threads=1)
    return path, [c.run_id() for c in configs]


def as_running(run_dir: Path) -> None:
    """Turn a finished run into one still being written: its merged files split back into one file
    per recorded epoch (``<table>/e000012.parquet``), as before ``RunStore.compact``."""
    store = RunStore.at(run_dir)
    for name in TABLES:
        merged = run_dir / f"{name}.parquet"
        if not merged.exists():
            continue
        table = pq.read_table(merged)
        for epoch in sorted(set(table["epoch"].to_pylist())):
            store.append(epoch, {name: table.filter(pc.equal(table["epoch"], epoch))})
        merged.unlink()
    store.set_status("running", 3)


@pytest.fixture
def sweeping(two_runs, tmp_path):
    """A copy of ``two_runs`` whose second run is still running (its records in per-epoch parts)."""
    source, run_ids = two_runs
    path = tmp_path / "results"
    shutil.copytree(source, path)
    as_running(path / run_ids[1])
    assert (path / run_ids[1] / "scalars" / "e000000.parquet").exists()
    return path, run_ids


def compact_when_listed(monkeypatch, path: Path, run_id: str, table: str) -> list[str]:
    """Make the running run ``run_id`` end (merge its parts, delete them) right after the views'
    files of ``table`` are listed, once: the listing of ``table`` names parts that are gone before
    DuckDB reads them. Returns the tables listed, in order."""
    listed = query_module.table_files
    calls: list[str] = []

    def list_then_compact(dirs, name):
        files = listed(dirs, name)
        calls.append(name)
        if name == table and calls.count(table) == 1:
            assert (path / run_id / "scalars" / "e000000.parquet").exists()  # parts were listed ...
            RunStore(path, run_id).compact()  # ... and are merged and deleted now
        return files

    monkeypatch.setattr(query_module, "table_files", list_then_compact)
    return calls


@pytest.mark.parametrize("when", ["scalars", "step_norms"])
def test_a_run_ending_between_listing_and_reading_does_not_fail_a_query(sweeping, monkeypatch, when):
    """``scalars``: the parts vanish while the views are set up (the schema check reads them);
    ``step_norms`` (listed last, not recorded here): once every view is made, so the query itself
    finds them gone. Either way the files are listed again and the query rerun."""
    path, run_ids = sweeping
    expected = rb.query(path, "select count(*) as n, sum(avg_rank) as r from scalars")
    calls = compact_when_listed(monkeypatch, path, run_ids[1], when)
    table = rb.query(path, "select count(*) as n, sum(avg_rank) as r from scalars")
    pd.testing.assert_frame_equal(table, expected)
    assert calls.count("scalars") == 2  # listed again after the first try failed
    assert not (path / run_ids[1] / "scalars").exists() and (path / run_ids[1] / "scalars.parquet").exists()
    final = rb.query(path, "select run_id, epoch from final order by run_id")
    assert final["run_id"].tolist() == sorted(run_ids) and final["epoch"].tolist() == [3, 3]


def test_export_and_connect_list_again_when_a_run_ends(sweeping, monkeypatch, tmp_path):
    path, run_ids = sweeping
    rows = len(rb.load(path).scalars)
    calls = compact_when_listed(monkeypatch, path, run_ids[1], "spectra")
    rb.export(path, tmp_path / "out")
    assert len(pd.read_csv(tmp_path / "out" / "scalars.csv")) == rows and calls.count("scalars") == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{v}.csv" for v in ("final", "layers", "runs", "scalars", "spectra")
    ]
    # a connection's views name the files of their listing; create_views lists again
    other = tmp_path / "other"
    shutil.copytree(path, other)
    as_running(other / run_ids[1])
    con = query_module.connect(other)
    RunStore(other, run_ids[1]).compact()
    with pytest.raises(duckdb.IOException):
        con.sql("select count(*) from scalars").fetchall()
    query_module.create_views(con, other)
    query_module.create_views(con, other)  # safe to re-create
    assert con.sql("select count(*) from scalars").fetchall() == [(rows,)]
    con.close()


def test_a_bad_statement_fails_at_once_with_the_views(sweeping, monkeypatch):
    path, _ = sweeping
    calls = []
    listed = query_module.table_files
    monkeypatch.setattr(query_module, "table_files", lambda dirs, name: calls.append(name) or listed(dirs, name))
    with pytest.raises(QueryError, match=r"(?s)nope.*\(views: runs, scalars, layers, spectra, final\)"):
        rb.query(path, "select nope from final")
    with pytest.raises(QueryError, match="syntax error"):
        rb.query(path, "selec 1")
    assert calls.count("scalars") == 2  # one listing each: no retry for errors that are not a vanished file


def test_queries_while_a_sweep_finishes_runs_never_fail(tmp_path):
    """A reader looping over ``final`` while a sweep trains and merges run after run."""
    path = tmp_path / "results"
    rb.train(small_config(**{"train.seed": 10}), path, threads=1)
    configs = [small_config(**{"train.seed": seed, "train.epochs": 4}) for seed in range(11, 15)]
    stop, counts, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                counts.append(int(rb.query(path, "select count(*) as n from final")["n"][0]))
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        rb.train(configs, path, jobs=1, max_cohort=1, threads=1)
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[0]
    assert counts and set(counts) <= {1, 2, 3, 4, 5}
    assert rb.query(path, "select count(*) as n from final")["n"][0] == 5


# -- read-only queries ------------------------------------------------------------------------


def _digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in path.rglob("*") if f.is_file()
    }


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("copy (select 1 as x) to '{merged}' (format parquet)", "COPY"),
        ("create table t as select * from runs", "CREATE"),
        ("insert into runs select * from runs", "INSERT"),
        ("attach '{tmp}/other.db' as other", "ATTACH"),
        ("set threads = 1", "SET"),
        ("pragma show_tables", "PRAGMA"),
        ("select 1; copy (select * from scalars) to '{merged}' (format parquet)", "COPY"),
        ("explain analyze copy (select 1 as x) to '{merged}' (format parquet)", "EXPLAIN"),
        ("export database '{tmp}/db'", "EXPORT"),
    ],
)
def test_query_refuses_statements_that_write(results, tmp_path, monkeypatch, sql, kind):
    path, configs = results
    merged = path / configs[0].run_id() / "scalars.parquet"
    monkeypatch.chdir(tmp_path)
    before = _digest(path)
    with pytest.raises(QueryError, match=f"rankbias query only reads: {kind}.* refused .*rb.export"):
        rb.query(path, sql.format(merged=merged, tmp=tmp_path))
    assert _digest(path) == before and list(tmp_path.iterdir()) == []
    assert rb.query(path, "select count(*) as n from final")["n"][0] == 4


def test_read_statements_still_run(results):
    path, _ = results
    n = rb.query(path, "with r as (select * from final) select count(*) as n from r")["n"][0]
    assert n == 4 and rb.query(path, "from final select count(*) as n")["n"][0] == 4
    assert rb.query(path, "select 1 as a; select 2 as b")["b"].tolist() == [2]
    assert "avg_rank" in rb.query(path, "describe final")["column_name"].tolist()
    assert len(rb.query(path, "explain select * from final")) == 1
    assert len(rb.query(path, "explain analyze select count(*) from scalars")) == 1
    assert "final" in rb.query(path, "show tables")["name"].tolist()
    with pytest.raises(QueryError, match="no SQL statement"):
        rb.query(path, "  ")


def test_cli_query_refuses_a_copy(results, tmp_path):
    path, configs = results
    target = path / configs[0].run_id() / "scalars.parquet"
    before = target.read_bytes()
    out = CliRunner().invoke(main, ["query", str(path), f"copy (select 1 as x) to '{target}' (format parquet)"])
    assert out.exit_code == 2 and "error: rankbias query only reads: COPY statements are refused" in out.output
    assert target.read_bytes() == before


# -- no partial export --------------------------------------------------------------------------


def _chmod_stops_writes() -> bool:
    """Whether mode 0o500 keeps new files out of a folder: not as root, who writes through it."""
    return os.geteuid() != 0


@pytest.mark.parametrize("existing", [True, False])
def test_export_to_an_unwritable_folder_leaves_nothing_behind(results, tmp_path, monkeypatch, existing):
    """Read-only (chmod 0o500; as root, where chmod does not stop writes, the third view's write
    fails with ENOSPC after writing part of its file): one StoreError, no file written or changed."""
    path, _ = results
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "final.csv").write_text("an earlier export")
    before = _digest(out) if existing else None
    read_only = existing and _chmod_stops_writes()
    if read_only:
        out.chmod(0o500)
    else:
        real_write = query_module._write_view
        written = []

        def third_write_fails(con, view, target, format):
            written.append(view)
            if len(written) == 3:
                target.write_text("part of a file")
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(con, view, target, format)

        monkeypatch.setattr(query_module, "_write_view", third_write_fails)
    try:
        with pytest.raises(StoreError, match=f"cannot write under {out}"):
            rb.export(path, out, "csv")
    finally:
        if read_only:
            out.chmod(0o700)
    if existing:
        assert _digest(out) == before and sorted(p.name for p in out.iterdir()) == ["final.csv", "notes.txt"]
    else:
        assert not out.exists()
    monkeypatch.undo()
    files = rb.export(path, out, "parquet")  # once it can be written: every view, the other files kept
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".parquet") == sorted(f.name for f in files)
    if existing:
        assert (out / "notes.txt").read_text() == "mine" and (out / "final.csv").read_text() == "an earlier export"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_export_reports_duckdbs_full_disk_as_one_store_error(results, tmp_path, monkeypatch):
    """DuckDB reports a write on a full disk as an IOException with the system's message."""
    path, _ = results
    out = tmp_path / "out"
    real_write = query_module._write_view

    def layers_to_a_full_disk(con, view, target, format):
        real_write(con, view, Path("/dev/full") if view == "layers" else target, format)

    monkeypatch.setattr(query_module, "_write_view", layers_to_a_full_disk)
    with pytest.raises(StoreError, match="No space left on device"):
        rb.export(path, out, "parquet")
    assert not out.exists()
