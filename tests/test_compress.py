"""Low-rank compression: exact on matrices of known rank, convolutions, unsupported layers listed,
stored runs compressed and evaluated, the CLI end to end."""

import json
import math

import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure
from torch import nn

import rankbias as rb
from rankbias.cli import main
from rankbias.compress import evaluate, parse_sweep, smallest
from rankbias.compress.factorize import _factorize
from rankbias.compress.figure import compression_figure
from rankbias.data import load_dataset

from .conftest import small_config


def low_rank(out: int, fan_in: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, rank, generator=g) @ torch.randn(rank, fan_in, generator=g)


# -- any module ---------------------------------------------------------------------------------
def test_linear_of_known_rank_compresses_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(low_rank(30, 40, 4))
    small, table = rb.compress(model, eps=1e-3)
    x = torch.randn(16, 40)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    first, last = table.set_index("name").loc["0"], table.set_index("name").loc["2"]
    assert first["rank"] == 4 and first["compressed"]
    assert (first["params_before"], first["params_after"]) == (30 * 40 + 30, 4 * (40 + 30) + 30)
    assert (first["flops_before"], first["flops_after"]) == (30 * 40, 4 * 70)
    assert not last["compressed"] and last["rank"] == 10 and "≥" in last["reason"]
    assert [type(m) for m in small[0]] == [nn.Linear, nn.Linear] and small[0][0].bias is None
    assert sum(p.numel() for p in small.parameters()) == 4 * 70 + 30 + 300
    assert isinstance(model[0], nn.Linear)  # the original is untouched


def test_rank_follows_eps_and_norm_as_the_records_define_it():
    weight = torch.diag(torch.tensor([1.0, 0.1, 0.01, 0.001]))
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    norm = weight.norm()  # σ/‖W‖_F: 0.995, 0.0995, 0.00995, 0.000995
    for eps, rank in ((0.5, 1), (0.05, 2), (0.005, 3), (1e-4, 4)):
        assert rb.compress(layer, eps=eps)[1]["rank"].item() == rank
    assert rb.compress(layer, eps=0.00999, norm="spectral")[1]["rank"].item() == 3  # σ/σ_max = 0.01 > ε
    assert rb.compress(layer, eps=0.00999)[1]["rank"].item() == 2 and norm > 1  # σ/‖W‖_F = 0.00995 < ε
    small, _table = rb.compress(layer, eps=0.5)  # rank 1 of 4: 8 < 16 parameters
    torch.testing.assert_close(small(torch.eye(4)), torch.diag(torch.tensor([1.0, 0, 0, 0])), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="norm: must be one of"):
        rb.compress(layer, eps=1e-3, norm="nuclear")
    with pytest.raises(ValueError, match="eps: must be > 0"):
        rb.compress(layer, eps=0)


def test_convolution_factorization_is_exact_at_full_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (3, 2), stride=2, padding=1, dilation=(1, 2), padding_mode="reflect")
    pair = _factorize(conv, 5)  # full rank: 5 = min(5, 3·3·2)
    assert [m.kernel_size for m in pair] == [(3, 2), (1, 1)] and pair[0].stride == (2, 2) and pair[0].bias is None
    x = torch.randn(2, 3, 11, 13)
    torch.testing.assert_close(pair(x), conv(x), atol=1e-5, rtol=1e-5)


def test_low_rank_convolution_compresses_with_counted_flops():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(low_rank(8, 27, 2).view(8, 3, 3, 3))
    model = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU()).eval()
    small, table = rb.compress(model, eps=1e-3, input_shape=(3, 10, 10))
    row = table.iloc[0]
    positions = 5 * 5  # (10 + 2 - 3) // 2 + 1 = 5 per side
    assert row["rank"] == 2 and row["compressed"]
    assert (row["params_before"], row["params_after"]) == (8 * 27 + 8, 2 * (27 + 8) + 8)
    assert (row["flops_before"], row["flops_after"]) == (positions * 8 * 27, positions * 2 * (27 + 8))
    x = torch.randn(4, 3, 10, 10)
    torch.testing.assert_close(small.eval()(x), nn.Sequential(conv, small[1], small[2])(x), atol=1e-5, rtol=1e-5)
    assert isinstance(small[1], nn.BatchNorm2d)  # batch norm kept
    assert math.isnan(rb.compress(conv, eps=1e-3)[1]["flops_before"].item())  # no input_shape: unknown


ZERO_RANK = [nn.Linear(6, 5), nn.Conv2d(2, 3, 3, stride=2), nn.Conv2d(2, 3, 3, padding="same", bias=False)]


@pytest.mark.parametrize("layer", ZERO_RANK)
def test_rank_zero_leaves_the_bias(layer):
    """Every singular value below ε‖W‖ (here W = 0): the layer's output is its bias alone."""
    with torch.no_grad():
        layer.weight.zero_()
    small, table = rb.compress(layer, eps=1e-3)
    assert table["rank"].item() == 0 and table["compressed"].item()
    bias = 0 if layer.bias is None else layer.bias.numel()
    assert table["params_after"].item() == bias == sum(p.numel() for p in small.parameters())
    x = torch.randn(2, 6) if isinstance(layer, nn.Linear) else torch.randn(2, 2, 7, 9)
    torch.testing.assert_close(small(x), layer(x))


class Mixed(nn.Module):
    """Layers rankbias does not factorize, around one it does."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 5, 16))
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.grouped = nn.Conv2d(4, 4, 1, groups=2)
        self.head = nn.Linear(16, 64)

    def forward(self, x):
        x = x + self.pos
        x, _ = self.attention(x, x, x)
        x, _ = self.lstm(x)
        x = self.grouped(x.reshape(-1, 4, 4, 5)).reshape(-1, 5, 16)
        return self.head(x)


def test_unsupported_layers_are_kept_and_listed():
    torch.manual_seed(0)
    model = Mixed().eval()
    with torch.no_grad():
        model.head.weight.copy_(low_rank(64, 16, 3))
    small, table = rb.compress(model, eps=1e-3, input_shape=(5, 16))
    rows = table.set_index("name")
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    listed = {f"{n}.weight" if n in dict(model.named_modules()) else n for n in rows.index}
    assert listed == matrices  # every parameter of 2+ dimensions has a row: none skipped silently
    assert rows.loc["head", "compressed"] and rows.loc["head", "flops_before"] == 5 * 64 * 16  # 5 tokens
    kept = rows.drop(index="head")
    assert not kept["compressed"].any() and (kept["params_after"] == kept["params_before"]).all()
    assert "MultiheadAttention" in rows.loc["attention.in_proj_weight", "reason"]
    assert "LSTM" in rows.loc["lstm.weight_ih_l0", "reason"] and "Mixed" in rows.loc["pos", "reason"]
    assert "subclasses nn.Linear" in rows.loc["attention.out_proj", "reason"]
    assert "groups=2" in rows.loc["grouped", "reason"]
    assert type(small.attention) is nn.MultiheadAttention and type(small.lstm) is nn.LSTM
    assert type(small.grouped) is nn.Conv2d
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)


def test_tied_weights_are_not_factorized():
    shared = nn.Linear(8, 8)
    with torch.no_grad():
        shared.weight.copy_(low_rank(8, 8, 1))
    model = nn.Sequential(shared, nn.ReLU(), shared)
    small, table = rb.compress(model, eps=1e-3)
    assert not table["compressed"].any() and "shared with" in table["reason"].iloc[0]
    assert small[0] is small[2]


def test_parse_sweep():
    values = parse_sweep("1e-4:1e-1:13")
    assert len(values) == 13 and values[0] == pytest.approx(1e-4) and values[-1] == pytest.approx(1e-1)
    assert values[4] == pytest.approx(1e-3)  # log-spaced: a quarter decade per step
    for bad in ("1e-4:1e-1", "a:b:3", "1e-1:1e-4:3", "0:1e-1:3", "1e-4:1e-1:0"):
        with pytest.raises(ValueError, match="LOW"):
            parse_sweep(bad)


# -- stored runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two runs of mlp-bn-2-32 on a digits subset with weight decay (batch 16 and 64), one cohort."""
    root = tmp_path_factory.mktemp("compress")
    base = {
        "model": "mlp-bn-2-32",
        "data": {"name": "digits", "train_size": 320, "test_size": 100},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
        "train": {"batch_size": 16, "epochs": 6},
    }
    configs = [rb.RunConfig.from_dict(base), rb.RunConfig.from_dict(base).replace(**{"train.batch_size": 64})]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKBIAS_OFFLINE", "1")
        runs = rb.train(configs, root / "results", data_root=root / "data")
        sweep = rb.compress_run(runs[0].path, sweep_eps="1e-4:3e-1:6", data_root=root / "data")
    assert all(r.state == "done" for r in runs)
    return {"root": root, "runs": runs, "sweep": sweep}


def test_compressed_run_over_eps(trained):
    sweep = trained["sweep"].sort_values("eps")
    run = trained["runs"][0]
    assert len(sweep) == 6 and (sweep["run_id"] == run.run_id).all()
    for column in ("params_after", "matrix_params_after", "flops_after"):
        assert sweep[column].is_monotonic_decreasing, column
    assert sweep["params_after"].iloc[-1] < sweep["params_before"].iloc[0]  # something was cut at ε = 0.3
    saved = sweep["params_before"] - sweep["params_after"]
    assert (saved == sweep["matrix_params_before"] - sweep["matrix_params_after"]).all()
    last = rb.load(run.path).scalars.sort_values("epoch").iloc[-1]
    # the same number of correct samples as the run's last record (which is stored as float32)
    assert sweep["test_acc_before"].tolist() == pytest.approx([last["test_acc"]] * 6, abs=1e-6)
    assert sweep["train_acc_before"].tolist() == pytest.approx([last["train_acc"]] * 6, abs=1e-6)
    assert sweep["test_loss_before"].iloc[0] == pytest.approx(last["test_loss"], rel=1e-4)
    untouched = sweep[sweep["layers_compressed"] == 0]
    assert (untouched["test_acc_after"] == untouched["test_acc_before"]).all()
    summary, layers = rb.read_compressed(run.path)  # stored next to the run
    assert min(p.name for p in (run.path / "compress").iterdir()).startswith("eps_")
    assert summary["params_after"].tolist() == sweep["params_after"].tolist()
    assert set(layers["name"]) == {"hidden.0", "hidden.1", "out"} and len(layers) == 18


def test_compressed_model_matches_its_table(trained):
    """The stored accuracy after compression is that of rb.compress(rb.load_model(run))."""
    run = trained["runs"][0]
    row = trained["sweep"].sort_values("eps").iloc[-1]
    model = rb.load_model(run.path)
    small, _table = rb.compress(model, eps=row["eps"], input_shape=(64,))
    assert sum(p.numel() for p in small.parameters()) == row["params_after"]
    config = rb.RunConfig.from_dict(json.loads((run.path / "config.json").read_text()))
    data = load_dataset(config.data, trained["root"] / "data")
    assert evaluate(small, data, config.loss)["test_acc"] == row["test_acc_after"]


def test_results_directory_and_figure(trained):
    results = trained["root"] / "results"
    table = rb.compress_run(results, eps=[1e-2, 1e-1], data_root=trained["root"] / "data", store=False)
    assert len(table) == 4 and set(table["train.batch_size"]) == {16, 64}
    best = smallest(table, max_drop=1.0).set_index("run_id")  # any accuracy: the smallest network of each run
    assert best["params_after"].to_dict() == table.groupby("run_id")["params_after"].min().to_dict()
    assert best["params_after"].is_monotonic_increasing
    strict = smallest(table, max_drop=-1.0)  # no ε can gain more than 1 in accuracy
    assert strict.empty
    figure = compression_figure(table, by="train.batch_size")
    assert isinstance(figure, Figure)
    labels = [line.get_label() for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["B = 16", "B = 64"]
    assert [len(line.get_xdata()) for line in figure.axes[0].get_lines()] == [2, 1, 2, 1]
    with pytest.raises(ValueError, match="not a setting that differs"):
        compression_figure(table, by="optimizer.lr")


def test_regression_compression_figure_draws_the_test_loss(trained):
    """A run without classes has no accuracy: its curve is the test loss (it was drawn empty)."""
    table = trained["sweep"].copy()
    table[["test_acc_before", "test_acc_after"]] = float("nan")
    axes = compression_figure(table).axes[0]
    assert axes.get_ylabel() == "test loss"
    curve = axes.get_lines()[0]
    assert list(curve.get_ydata()) == table.sort_values("eps")["test_loss_after"].tolist()


def test_cli_compress(trained):
    results, data = trained["root"] / "results", str(trained["root"] / "data")
    run = trained["runs"][1].path
    runner = CliRunner()
    one = runner.invoke(main, ["compress", str(run), "--eps", "0.1", "--data-dir", data])
    assert one.exit_code == 0, one.output
    assert all(word in one.output for word in ("hidden.0", "reason", "params_after", "test_acc_after"))
    assert (run / "compress" / "eps_1.000000e-01_fro.parquet").exists()
    sweep = runner.invoke(main, ["compress", str(run), "--sweep-eps", "1e-3:1e-1:3", "--data-dir", data])
    assert sweep.exit_code == 0, sweep.output
    assert (run / "compress" / "compress.png").stat().st_size > 0 and "figure written" in sweep.output
    every = runner.invoke(main, ["compress", str(results), "--eps", "1e-2", "--data-dir", data])
    assert every.exit_code == 0, every.output
    assert "smallest network per run" in every.output and "train.batch_size" in every.output
    assert (results / "compress.png").exists()
    bad_input = {
        "Invalid value for '--eps': 0.0 is not in the range 0<x<1": ["--eps", "0"],
        "not both": ["--eps", "0.1", "--sweep-eps", "1e-3:1e-1:3"],
        "LOW:HIGH:COUNT": ["--sweep-eps", "3"],
        "not a config key": ["--eps", "0.1", "--by", "batch_size"],
    }
    stored = {p: p.stat().st_mtime_ns for p in (run / "compress").iterdir()}
    for message, bad in bad_input.items():
        out = runner.invoke(main, ["compress", str(run), *bad, "--data-dir", data])
        assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output
    assert {p: p.stat().st_mtime_ns for p in (run / "compress").iterdir()} == stored  # nothing touched


def test_convolutional_run(tmp_path):
    """A stored convnet: convolutions factorized, FLOPs from the measured output sizes."""
    config = rb.RunConfig.from_dict({
        "model": "convnet-2-8",
        "data": {"name": "digits", "train_size": 128, "test_size": 64},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
        "train": {"batch_size": 16, "epochs": 2},
    })
    run = rb.train(config, tmp_path / "results")
    (row,) = rb.compress_run(run.path, eps=0.3).itertuples()
    assert row.test_acc_before == pytest.approx(rb.load(run.path).scalars["test_acc"].iloc[-1], abs=1e-6)
    layers = rb.read_compressed(run.path)[1]
    convs = layers[layers["kind"] == "Conv2d"]
    assert len(convs) >= 2 and convs["flops_before"].notna().all() and convs["compressed"].any()
    shape = convs["shape"].map(tuple)
    fan_in = shape.map(lambda s: s[1] * s[2] * s[3])
    positions = convs["flops_before"] / (shape.map(lambda s: s[0]) * fan_in)
    assert (positions == positions.round()).all() and (positions >= 1).all()
    factored = convs["rank"] * (fan_in + shape.map(lambda s: s[0])) * positions
    assert (convs["flops_after"] == factored.where(convs["compressed"], convs["flops_before"])).all()
    assert row.params_after < row.params_before and row.layers_compressed == layers["compressed"].sum()


def test_bad_run_in_a_results_directory_stops_before_anything_is_stored(trained, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(trained["root"] / "results", results)
    broken = results / trained["runs"][1].run_id / "config.json"
    config = json.loads(broken.read_text())
    config["data"]["name"] = "mnist"  # not on disk, and tests are offline
    broken.write_text(json.dumps(config))
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    with pytest.raises(rb.RankbiasError, match="mnist"):
        rb.compress_run(results, eps=0.1, data_root=trained["root"] / "data")
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def test_a_long_sweep_shows_progress_on_a_terminal(tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run = rb.train(small_config(**{"train.epochs": 1}), tmp_path)
    monkeypatch.setattr(sys, "stderr", Terminal())
    rb.compress_run(run.path, sweep_eps="1e-3:1e-1:3", store=False, progress=True)
    assert "compress" in sys.stderr.getvalue() and "3/3" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", Terminal())
    rb.compress_run(run.path, sweep_eps="1e-3:1e-1:3", store=False)
    assert sys.stderr.getvalue() == ""  # off unless asked (the CLI asks)
