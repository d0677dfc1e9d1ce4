"""Export to TensorBoard, W&B and MLflow (rankbias.sinks): every value read back with the tool's
own reader equals rb.load's. Offline: W&B offline runs, MLflow's file store, all under tmp_path."""

import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

import rankbias as rb
from rankbias import sinks
from rankbias.cli import export_command, main
from rankbias.errors import ConfigError

from .conftest import small_config

MEASURES = ("eps_rank", "stable_rank", "effective_rank")
RECORDED = ("train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "lr", "step")


@pytest.fixture(autouse=True)
def tools_offline(monkeypatch, tmp_path):
    """W&B and MLflow never reach a server and write nothing outside tmp_path."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlflow-default").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored after each test (the sink only sets a default)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two runs of rb.train, 2 epochs each (records at epochs 0, 1, 2)."""
    path = tmp_path_factory.mktemp("sinks") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKBIAS_OFFLINE", "1")
        mp.setenv("RANKBIAS_DATA", str(path.parent / "data"))
        configs = [small_config(**{"train.epochs": 2, "optimizer.lr": lr}) for lr in (0.05, 0.1)]
        rb.train(configs, path, threads=1)
    return path


# -- what rb.load says each tool must hold ----------------------------------------------------


def expected(records, run_id):
    """{tag: {epoch: value}} of the scalars, {tag: {epoch: number of singular values}} of the
    histograms, from rb.load's tables directly (not through rankbias.sinks)."""
    scalars, counts = defaultdict(dict), defaultdict(dict)
    for row in records.scalars[records.scalars.run_id == run_id].to_dict("records"):
        for name in ("avg_rank", *RECORDED):
            if row[name] is not None and not np.isnan(row[name]):
                scalars[name][row["epoch"]] = float(row[name])
    layers = records.layers[records.layers.run_id == run_id]
    for row in layers.to_dict("records"):
        for measure in MEASURES:
            scalars[f"{measure}/{row['layer']}"][row["epoch"]] = float(row[measure])
    for measure in ("stable_rank", "effective_rank"):
        for epoch, value in layers[layers.counted].groupby("epoch")[measure].mean().items():
            scalars[f"avg_{measure}"][epoch] = float(value)
    if not records.metrics.empty:
        for row in records.metrics[records.metrics.run_id == run_id].to_dict("records"):
            scalars[row["name"]][row["epoch"]] = float(row["value"])
    for row in records.spectra[records.spectra.run_id == run_id].to_dict("records"):
        counts[f"sv/{row['layer']}"][row["epoch"]] = len(row["sv"])
    return dict(scalars), dict(counts)


def check_scalars(found, want, rel):
    assert set(found) == set(want), set(found) ^ set(want)
    for tag, values in want.items():
        assert sorted(found[tag]) == sorted(values), tag  # every recorded epoch, as the step, once
        for epoch, value in values.items():
            assert found[tag][epoch] == pytest.approx(value, rel=rel, abs=1e-9), (tag, epoch)


def read_tensorboard(folder: Path):
    """Scalars {tag: {step: value}} and histograms {tag: {step: (count, sum)}}, by TensorBoard's
    own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}
    for tag, values in scalars.items():
        assert len(acc.Scalars(tag)) == len(values), f"{tag}: a step written twice"
    histograms = {
        t: {e.step: (e.histogram_value.num, e.histogram_value.sum) for e in acc.Histograms(t)}
        for t in acc.Tags()["histograms"]
    }
    return scalars, histograms


def wandb_records(path: Path):
    """The records of an offline run's .wandb file, parsed with wandb's own protobuf schema. The
    file is wandb's LevelDB-style log (wandb 0.31 ships no Python reader of it): a 7-byte header
    (':W&B', magic, version), then 32 KiB blocks of chunks, each crc (4), length (2), type (1:
    full, 2: first, 3: middle, 4: last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
        else:
            break
    return [wandb_internal_pb2.Record.FromString(chunk) for chunk in chunks]


def read_wandb(run_dir: Path):
    """(run record, config, scalars {key: {step: value}}, histograms {key: {step: count}})."""
    import json

    (file,) = run_dir.glob("run-*.wandb")
    run, config = None, {}
    scalars, histograms = defaultdict(dict), defaultdict(dict)
    for record in wandb_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            config |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            step = record.history.step.num
            for item in record.history.item:
                key = item.key or item.nested_key[0]
                if key.startswith("_"):
                    continue
                if len(item.nested_key) > 1:
                    if item.nested_key[1] == "values":
                        histograms[key][step] = sum(json.loads(item.value_json))
                else:
                    assert step not in scalars[key], f"{key}: step {step} written twice"
                    scalars[key][step] = json.loads(item.value_json)
    config.pop("_wandb", None)
    return run, config, dict(scalars), dict(histograms)


def read_mlflow(store: Path, experiment: str):
    """{run name: (tags, params, {metric: {step: value}})} of the active runs, by MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    out = {}
    for run in client.search_runs([found.experiment_id]):
        assert run.info.run_name not in out, f"{run.info.run_name} exported twice"
        metrics = {}
        for key in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            metrics[key] = {m.step: m.value for m in history}
            assert len(metrics[key]) == len(history), f"{key}: a step logged twice"
        out[run.info.run_name] = (run.data.tags, run.data.params, metrics)
    return out


def flat_config(records, run_id):
    row = records.runs[records.runs.run_id == run_id].iloc[0].to_dict()
    return sinks.run_config(row)


# -- export ----------------------------------------------------------------------------------


def test_export_to_tensorboard_holds_every_record(results, tmp_path):
    out = tmp_path / "tb"
    result = CliRunner().invoke(main, ["export", str(results), str(out), "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    records = rb.load(results)
    assert sorted(p.name for p in out.iterdir()) == sorted(records.runs.run_id)  # a subfolder per run
    assert result.stdout.split() == [str(out / r) for r in records.runs.run_id]
    for run_id in records.runs.run_id:
        want, counts = expected(records, run_id)
        scalars, histograms = read_tensorboard(out / run_id)
        check_scalars(scalars, want, rel=1e-6)  # float32 in the event file
        assert {t: {e: n for e, (n, _) in h.items()} for t, h in histograms.items()} == counts
        spectra = records.spectra[records.spectra.run_id == run_id]
        for row in spectra.to_dict("records"):  # σ/‖W‖_F: the squares sum to 1
            sv = row["sv"].astype(np.float64)
            _, total = histograms[f"sv/{row['layer']}"][row["epoch"]]
            assert total == pytest.approx(sv.sum() / np.sqrt((sv**2).sum()), rel=1e-6)


def test_export_to_wandb_holds_every_record(results, tmp_path):
    out = tmp_path / "wb"
    where = sinks.export_to(results, out, "wandb")
    records = rb.load(results)
    assert len(where) == 2 and len(list((out / "wandb").glob("offline-run-*"))) == 2
    for run_id in records.runs.run_id:
        (run_dir,) = (out / "wandb").glob(f"offline-run-*-{run_id}")
        assert str(run_dir) in where
        run, config, scalars, histograms = read_wandb(run_dir)
        assert run.run_id == run_id and run.display_name == run_id and run.project == "results"
        assert config == flat_config(records, run_id) and config["optimizer.lr"] in (0.05, 0.1)
        want, counts = expected(records, run_id)
        check_scalars(scalars, want, rel=1e-12)
        assert histograms == counts


def test_export_to_mlflow_holds_every_scalar(results, tmp_path):
    out = tmp_path / "mlruns"
    result = CliRunner().invoke(main, ["export", str(results), str(out), "--to", "mlflow"])
    assert result.exit_code == 0, result.output
    records = rb.load(results)
    runs = read_mlflow(out, "results")  # the experiment is named after the results folder
    assert sorted(runs) == sorted(records.runs.run_id)
    for run_id, (tags, params, metrics) in runs.items():
        assert tags["rankbias.run_id"] == run_id
        assert params == {k: str(v) for k, v in flat_config(records, run_id).items()}
        want, _ = expected(records, run_id)
        check_scalars(metrics, want, rel=1e-12)  # no histograms in MLflow


def test_export_twice_replaces_each_runs_copy(results, tmp_path):
    for to in sinks.SINKS:
        out = tmp_path / to
        sinks.export_to(results, out, to)
        sinks.export_to(results, out, to)
        if to == "tensorboard":
            assert all(len(list(d.glob("events.out.tfevents.*"))) == 1 for d in out.iterdir())
            read_tensorboard(next(out.iterdir()))  # no step twice
        elif to == "wandb":
            assert len(list((out / "wandb").glob("offline-run-*"))) == 2
        else:
            assert len(read_mlflow(out, "results")) == 2  # the earlier runs are deleted


def test_export_of_one_run_folder_names_the_experiment_after_its_results(results, tmp_path):
    run_id = rb.load(results).runs.run_id.iloc[0]
    sinks.export_to(results / run_id, tmp_path / "mlruns", "mlflow")
    assert list(read_mlflow(tmp_path / "mlruns", "results")) == [run_id]


def test_the_commands_choices_are_the_sinks():
    (to,) = [p for p in export_command.params if p.name == "to"]
    assert tuple(to.type.choices) == tuple(sinks.SINKS)


def test_to_and_format_together_is_one_error(results, tmp_path):
    args = ["export", str(results), str(tmp_path / "o"), "--to", "mlflow", "--format", "csv"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "error: --to:" in result.stderr
    result = CliRunner().invoke(main, ["export", str(results), str(tmp_path / "csv")])
    assert result.exit_code == 0 and (tmp_path / "csv" / "final.csv").exists()  # tables stay the default


# -- a missing package, a bad sink ------------------------------------------------------------


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_package_is_one_config_error_naming_the_extra(name, module, monkeypatch, tmp_path, results):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'rankbias\[{name}\]'"):
        sinks.make_sink(name, tmp_path / "out")
    result = CliRunner().invoke(main, ["export", str(results), str(tmp_path / "o"), "--to", name])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: to: {name} is not installed: pip install 'rankbias[{name}]' (or pip install {sinks.PACKAGES[name]})"
    ]
    with pytest.raises(ConfigError, match=r"log_to: .*rankbias\[" + name):
        rb.Tracker(nn.Linear(3, 2), tmp_path / "tracked", log_to=(name, tmp_path / "out"))
    assert not (tmp_path / "tracked").exists()  # refused before the run is created


def test_a_bad_sink_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown sink 'tensorbored'"):
        rb.Tracker(nn.Linear(3, 2), tmp_path, log_to=("tensorbored", tmp_path))
    with pytest.raises(ConfigError, match="needs a destination"):
        sinks.make_sink("wandb")
    with pytest.raises(ConfigError, match="a Sink object"):
        rb.Tracker(nn.Linear(3, 2), tmp_path, log_to=[42])


# -- live, from rb.Tracker --------------------------------------------------------------------


def tracked_loop(results, log_to, epochs, first=0, name="live"):
    """A user's loop: a small MLP, SGD, a record each epoch with a metric of its own."""
    torch.manual_seed(first)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    settings = {"optimizer.lr": 0.1, "optimizer.weight_decay": 1e-3, "train.batch_size": 64}
    with rb.Tracker(model, results, name=name, config=settings, log_to=log_to) as tracker:
        for epoch in range(first, epochs + 1):
            loss = nn.functional.cross_entropy(model(x), y)
            if epoch > 0:
                opt.zero_grad()
                loss.backward()
                opt.step()
            tracker.record(epoch=epoch, step=epoch, train_loss=loss, grad_norm=float(epoch) / 10)
    return tracker


def test_a_tracker_logs_each_record_to_every_sink(tmp_path):
    out = tmp_path / "live"
    log_to = [("tensorboard", out / "tb"), ("wandb", out / "wb"), ("mlflow", out / "mlruns")]
    tracker = tracked_loop(tmp_path / "results", log_to, epochs=2)
    records = rb.load(tracker.path)
    want, counts = expected(records, tracker.run_id)
    assert set(want["grad_norm"]) == {0, 1, 2} and set(want["train_loss"]) == {0, 1, 2}
    scalars, histograms = read_tensorboard(out / "tb" / tracker.run_id)
    check_scalars(scalars, want, rel=1e-6)
    assert {t: {e: n for e, (n, _) in h.items()} for t, h in histograms.items()} == counts
    (run_dir,) = (out / "wb" / "wandb").glob(f"offline-run-*-{tracker.run_id}")
    run, config, scalars, histograms = read_wandb(run_dir)
    assert run.project == "results" and config == flat_config(records, tracker.run_id)
    check_scalars(scalars, want, rel=1e-12)
    assert histograms == counts
    (_, params, metrics), *others = read_mlflow(out / "mlruns", "results").values()
    assert not others and params["tracked.name"] == "live"
    check_scalars(metrics, want, rel=1e-12)


def test_a_resumed_tracker_leaves_each_sink_with_what_the_store_holds(tmp_path):
    """A loop killed after epoch 3 that starts again from its checkpoint of epoch 1: the store
    replaces epochs 2 and 3, and each sink's copy is rewritten to match it."""
    out = tmp_path / "live"
    log_to = [("tensorboard", out / "tb"), ("wandb", out / "wb"), ("mlflow", out / "mlruns")]
    tracked_loop(tmp_path / "results", log_to, epochs=3)
    tracker = tracked_loop(tmp_path / "results", log_to, epochs=4, first=2)  # other weights from epoch 2 on
    records = rb.load(tracker.path)
    assert sorted(records.scalars.epoch) == [0, 1, 2, 3, 4]
    want, _ = expected(records, tracker.run_id)
    scalars, _ = read_tensorboard(out / "tb" / tracker.run_id)
    check_scalars(scalars, want, rel=1e-6)
    (run_dir,) = (out / "wb" / "wandb").glob(f"offline-run-*-{tracker.run_id}")
    check_scalars(read_wandb(run_dir)[2], want, rel=1e-12)
    ((_, _, metrics),) = read_mlflow(out / "mlruns", "results").values()
    check_scalars(metrics, want, rel=1e-12)


class Broken:
    """A sink whose backend fails at its second record."""

    def __init__(self):
        self.logged = []

    def open(self, run_id, config):
        pass

    def log(self, epoch, scalars, histograms):
        if epoch == 1:
            raise OSError("the logging service went away")
        self.logged.append(epoch)

    def close(self):
        pass


def test_a_failing_sink_warns_once_and_loses_no_record(tmp_path):
    broken = Broken()
    with pytest.warns(RuntimeWarning, match="Broken failed at epoch 1 .*the logging service went away") as caught:
        tracker = tracked_loop(tmp_path / "results", [broken], epochs=3)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1  # once, then not used
    assert broken.logged == [0]
    assert sorted(rb.load(tracker.path).scalars.epoch) == [0, 1, 2, 3]
    assert rb.load(tracker.path).runs.state.iloc[0] == "done"


def test_an_mlflow_tracking_uri_reaches_mlflow_whole(results, monkeypatch):
    seen = []
    monkeypatch.setattr(sinks, "export_to", lambda path, out, to: seen.append(out) or [])
    result = CliRunner().invoke(main, ["export", str(results), "sqlite:///mlflow.db", "--to", "mlflow"])
    assert result.exit_code == 0 and seen == ["sqlite:///mlflow.db"]  # not a path with its slashes folded


def test_a_sweep_logs_each_run_when_its_cohort_ends(tmp_path):
    results, tb = tmp_path / "results", tmp_path / "tb"
    configs = [small_config(**{"train.epochs": 2, "train.batch_size": b}) for b in (16, 32)]  # two cohorts
    out = CliRunner().invoke(main, ["run", str(write_sweep(tmp_path)), "--results", str(results), "--jobs", "1",
                                    "--no-progress", "--log-to", f"tensorboard:{tb}"])  # fmt: skip
    assert out.exit_code == 0, out.output
    records = rb.load(results)
    assert sorted(records.runs.run_id) == sorted(c.run_id() for c in configs) == sorted(p.name for p in tb.iterdir())
    for run_id in records.runs.run_id:
        want, counts = expected(records, run_id)
        scalars, histograms = read_tensorboard(tb / run_id)
        check_scalars(scalars, want, rel=1e-6)
        assert {t: {e: n for e, (n, _) in h.items()} for t, h in histograms.items()} == counts
    bad = CliRunner().invoke(main, ["run", str(write_sweep(tmp_path)), "--results", str(tmp_path / "r2"),
                                    "--log-to", "tensorboard"])  # fmt: skip
    assert bad.exit_code == 2 and "--log-to: takes TOOL:DEST" in bad.output and not (tmp_path / "r2").exists()


def write_sweep(tmp_path: Path) -> Path:
    """The two configs of the test above as a sweep file (small_config's settings)."""
    path = tmp_path / "sweep.yaml"
    base = small_config(**{"train.epochs": 2}).to_dict()
    base["sweep"] = {"train.batch_size": [16, 32]}
    path.write_text(yaml.safe_dump(base))
    return path
