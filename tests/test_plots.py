"""Figure families from stored records: lines, cells, panels, labels, and the numbers drawn."""

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.colors import to_rgba
from matplotlib.image import AxesImage

import rankbias as rb
from rankbias import plots
from rankbias.cli import main
from rankbias.plots import PlotError
from rankbias.report import choose_figures

from .stored_sweeps import BATCHES, DECAYS, SEEDS, build_grid, build_regression, build_seeds

SRC = Path(__file__).resolve().parents[1] / "src" / "rankbias"


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    return build_grid(tmp_path_factory.mktemp("grid"))


@pytest.fixture(scope="module")
def records(grid):
    return rb.load(grid)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return rb.load(build_seeds(tmp_path_factory.mktemp("seeds")))


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> Path:
    return build_regression(tmp_path_factory.mktemp("regression"))


def run_of(records, batch, decay) -> str:
    runs = records.runs
    return runs[(runs["train.batch_size"] == batch) & np.isclose(runs["optimizer.weight_decay"], decay)][
        "run_id"
    ].item()


def direct_rank(sv, eps, norm="fro") -> int:
    """The ε-rank straight from the definition, independent of rankbias.spectra."""
    s = np.asarray(sv, dtype=np.float64)
    scale = np.sqrt((s**2).sum()) if norm == "fro" else s.max()
    return int((s / scale > eps).sum())


def direct_average(records, run_id, epoch, eps, norm="fro") -> float:
    layers = records.layers[
        (records.layers["run_id"] == run_id) & (records.layers["epoch"] == epoch) & records.layers["counted"]
    ]
    spectra = records.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    return float(np.mean([direct_rank(spectra[(run_id, epoch, name)], eps, norm) for name in layers["layer"]]))


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []


def test_rank_vs_epoch_lines_panels_labels(records):
    fig = plots.rank_vs_epoch(records, vary="B", panel="λ")
    top, bottom = fig.axes[:2], fig.axes[2:4]
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in top] == ["λ = 0", "λ = 0.005"]
    assert texts(fig) == ["B = 16", "B = 32", "train", "test"]
    assert "average rank" in top[0].get_ylabel() and "ε = 0.001" in top[0].get_ylabel()
    assert bottom[0].get_ylabel() == "accuracy" and bottom[0].get_xlabel() == "epoch"
    for ax, decay in zip(top, (0.0, 5e-3)):
        assert [line.get_label() for line in ax.get_lines()] == ["B = 16", "B = 32"]
        for line, batch in zip(ax.get_lines(), BATCHES):
            s = records.scalars[records.scalars["run_id"] == run_of(records, batch, decay)].sort_values("epoch")
            assert np.array_equal(line.get_xdata(), s["epoch"]) and np.array_equal(line.get_ydata(), s["avg_rank"])
    for ax in bottom:
        assert len(ax.get_lines()) == 4  # train and test accuracy of 2 runs
        assert sorted(line.get_linestyle() for line in ax.get_lines()) == ["-", "-", "--", "--"]


def test_ranks_at_a_new_eps_equal_ranks_from_the_same_singular_values(grid, records):
    eps = 0.05
    fig = plots.rank_vs_epoch(grid, vary="B", panel="λ", eps=eps, norm="spectral")
    assert "ε = 0.05" in fig.axes[0].get_ylabel() and "spectral" in fig.axes[0].get_ylabel()
    run_id = run_of(records, 16, 0.0)
    line = fig.axes[0].get_lines()[0]
    expected = [direct_average(records, run_id, e, eps, "spectral") for e in line.get_xdata()]
    assert np.allclose(line.get_ydata(), expected)
    assert expected != [direct_average(records, run_id, e, 1e-3) for e in line.get_xdata()]  # ε made a difference
    grid_eps = np.array([1e-3, 0.05, 0.2])
    fig = plots.rank_vs_eps(records, vary="B", panel="λ", eps_grid=grid_eps)
    last = records.scalars.groupby("run_id")["epoch"].max()
    for ax, decay in zip(fig.axes, (0.0, 5e-3)):
        for line, batch in zip(ax.get_lines(), BATCHES):
            run_id = run_of(records, batch, decay)
            expected = [direct_average(records, run_id, last[run_id], e) for e in grid_eps]
            assert np.allclose(line.get_ydata(), expected)
            stored = records.scalars[
                (records.scalars["run_id"] == run_id) & (records.scalars["epoch"] == last[run_id])
            ]["avg_rank"].item()
            assert line.get_ydata()[0] == stored  # at the recorded ε: the stored average rank


def test_roles_are_checked_with_one_clear_message(records):
    with pytest.raises(
        PlotError, match=r"also differ in λ \(optimizer.weight_decay\).*--where optimizer.weight_decay=VALUE"
    ):
        plots.rank_vs_epoch(records, vary="B", panel="μ")
    with pytest.raises(PlotError, match="unknown hyperparameter 'batchsize'"):
        plots.rank_vs_epoch(records, vary="batchsize")
    with pytest.raises(PlotError, match="no run with records has optimizer.weight_decay = 0.1"):
        plots.rank_vs_epoch(records, where={"weight_decay": 0.1})
    fig = plots.rank_vs_epoch(records, vary="batch_size", where={"lambda": 5e-3})
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 2


def test_heatmap_cells_are_the_final_average_ranks(records):
    fig = plots.rank_heatmap(records, x="B", y="λ")
    ax = fig.axes[0]
    (image,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert image.get_array().shape == (2, 2)
    assert ax.get_xlabel() == "B" and ax.get_ylabel() == "λ"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32"]
    assert "final average rank" in fig.axes[1].get_ylabel()  # the colour bar
    last = records.scalars.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")["avg_rank"]
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    for j, batch in enumerate(BATCHES):
        for i, decay in enumerate((0.0, 5e-3)):
            assert cells[(j, i)] == f"{last[run_of(records, batch, decay)]:.3g}"
            assert image.get_array()[i, j] == last[run_of(records, batch, decay)]


def test_layer_ranks_and_layer_spectra(records):
    fig = plots.layer_ranks(records, vary="B", panel="λ")
    assert len(fig.axes) == 2 and all(len(ax.get_lines()) == 2 for ax in fig.axes)
    final = records.layers[(records.layers["epoch"] == 3) & records.layers["counted"]]
    line = fig.axes[1].get_lines()[0]
    rows = final[final["run_id"] == run_of(records, 16, 5e-3)].sort_values("index")
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == list(rows["eps_rank"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["hidden.0", "hidden.1", "hidden.2"]

    fig = plots.layer_spectra(records, vary="B", where={"λ": 5e-3})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["hidden.0", "hidden.1", "hidden.2"]
    spectra = records.spectra.set_index(["run_id", "epoch", "layer"])["sv"]
    for ax in visible:
        lines = ax.get_lines()
        assert len(lines) == 3 and ax.get_yscale() == "log"  # 2 settings + the ε line
        assert list(lines[2].get_ydata()) == [1e-3, 1e-3]
        sv = np.asarray(spectra[(run_of(records, 32, 5e-3), 3, ax.get_title())], dtype=np.float64)
        assert np.allclose(lines[1].get_ydata(), sv / np.sqrt((sv**2).sum()))
        assert (np.asarray(lines[1].get_ydata()) > 1e-3).sum() == direct_rank(sv, 1e-3)


def test_convergence_and_norm_ratio(records):
    fig = plots.convergence(records, vary="λ", panel="B")
    assert len(fig.axes) == 6  # distance, train loss, train accuracy × 2 batch sizes
    assert [ax.get_title() for ax in fig.axes[:2]] == ["B = 16", "B = 32"]
    assert (
        fig.axes[0].get_yscale() == "log" and fig.axes[2].get_yscale() == "log" and fig.axes[4].get_yscale() == "linear"
    )
    assert fig.axes[0].get_ylabel() == "$d(W_{t+1}, W_t)$" and texts(fig) == ["λ = 0", "λ = 0.005"]
    line = fig.axes[0].get_lines()[1]
    s = records.scalars[records.scalars["run_id"] == run_of(records, 16, 5e-3)].sort_values("epoch")
    assert np.allclose(line.get_ydata(), s["distance"], equal_nan=True)

    fig = plots.norm_ratio(records, panel="B", where={"λ": 5e-3})
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.get_lines()) == 4  # 3 matrices + the line at 1
    assert texts(fig) == ["hidden.0", "hidden.1", "hidden.2"]
    rows = records.layers[
        (records.layers["run_id"] == run_of(records, 32, 5e-3)) & (records.layers["layer"] == "hidden.2")
    ].sort_values("epoch")
    assert np.allclose(fig.axes[1].get_lines()[2].get_ydata(), rows["norm_ratio"], equal_nan=True)


def test_weight_decay_generalization_chen(regression):
    records = rb.load(regression)
    fig = plots.weight_decay_generalization(regression)
    assert len(fig.axes) == 3
    assert [ax.get_ylabel() for ax in fig.axes] == ["stable rank of V", "train MSE", "test − train MSE"]
    assert all(ax.get_xlabel() == "λ" and ax.get_xscale() == "symlog" for ax in fig.axes)
    final = records.scalars[records.scalars["epoch"] == 3].set_index("run_id")
    order = records.runs.sort_values("optimizer.weight_decay")["run_id"]
    stable = records.layers[(records.layers["epoch"] == 3) & (records.layers["layer"] == "V")].set_index("run_id")[
        "stable_rank"
    ]
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0.0, 1e-3, 1e-2] and np.allclose(line.get_ydata(), stable[order])
    assert np.allclose(fig.axes[2].get_lines()[0].get_ydata(), (final["test_loss"] - final["train_loss"])[order])
    with pytest.raises(PlotError, match="two or more values of optimizer.weight_decay"):
        plots.weight_decay_generalization(records, where={"λ": 0.0})
    fig = plots.rank_vs_epoch(records)  # regression: losses instead of accuracy
    assert fig.axes[1].get_ylabel() == "MSE" and fig.axes[1].get_yscale() == "log"


def test_spectra_over_training_image(records):
    fig = plots.spectra_over_training(records, layer="hidden.1", panel="B", where={"λ": 5e-3})
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["hidden.1, B = 16", "hidden.1, B = 32"]
    (mesh,) = [c for c in panels[0].collections if isinstance(c, QuadMesh)]
    run_id = run_of(records, 16, 5e-3)
    rows = records.spectra[
        (records.spectra["run_id"] == run_id) & (records.spectra["layer"] == "hidden.1")
    ].sort_values("epoch")
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in rows["sv"]])
    expected = np.log10(stack / np.sqrt((stack**2).sum(1, keepdims=True)))
    assert mesh.get_array().shape == (16, 4)  # index × epochs 0..3
    assert np.allclose(np.asarray(mesh.get_array()), expected.T)
    assert "log_{10}" in fig.axes[-1].get_ylabel()


def test_figures_leave_no_global_state_and_pdf_is_vector(records, tmp_path):
    for module in [*(SRC / "plots").glob("*.py"), *(SRC / "report").glob("*.py")]:
        assert not re.search(
            r"import\s+matplotlib\.pyplot|from\s+matplotlib\s+import\s+pyplot", module.read_text()
        ), module
    before = dict(matplotlib.rcParams)
    fig = plots.rank_vs_epoch(records, vary="B", panel="λ")
    path = plots.save(fig, tmp_path / "fig.pdf")
    assert dict(matplotlib.rcParams) == before
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and b"/Subtype /Image" not in data  # lines and text, no raster
    assert fig.get_figwidth() < 12 and all(t.get_fontsize() >= 8 for ax in fig.axes for t in ax.get_xticklabels())


def test_plot_command(grid, tmp_path):
    runner = CliRunner()
    out = tmp_path / "fig.pdf"
    result = runner.invoke(
        main,
        [
            "plot", str(grid), "rank-vs-epoch",
            "--vary", "train.batch_size", "--panel", "optimizer.weight_decay", "--out", str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF") and str(out) in result.output
    result = runner.invoke(
        main,
        [
            "plot", str(grid), "layer-spectra",
            "--where", "λ=0.005", "--layer", "hidden.1", "--out", str(tmp_path / "s.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(main, ["plot", str(grid), "heatmap", "--vary", "B"])
    assert result.exit_code == 2 and "--vary does not apply to heatmap; it takes --x, --y" in result.output
    result = runner.invoke(main, ["plot", str(grid), "rank-vs-time"])
    assert result.exit_code == 2 and "unknown figure family 'rank-vs-time'" in result.output
    helptext = runner.invoke(main, ["plot", "--help"]).output
    assert all(name in helptext for name, figure in plots.FIGURES.items() if figure.table is None)


def test_one_registry_holds_every_figure():
    """plots.FIGURES: the families drawn from records, and the theory and compression figures,
    which draw a table (``rankbias plot`` says where that table comes from)."""
    import inspect

    from rankbias.compress.figure import compression_figure
    from rankbias.theory.figures import theorem_3_3_figure

    figures = plots.FIGURES
    assert [n for n, f in figures.items() if f.table is None] == [
        "rank-vs-epoch", "heatmap", "layer-ranks", "layer-spectra", "convergence", "norm-ratio", "weight-decay",
        "rank-vs-eps", "spectra-over-training",
    ]
    assert {f.number for f in figures.values() if f.table} == {"theory", "compress"}
    assert (
        figures["compression"].function is compression_figure
        and figures["theorem-3-3"].function is theorem_3_3_figure
    )
    for figure in figures.values():
        assert figure.help and "\n" not in figure.help
        assert next(iter(inspect.signature(figure.function).parameters)) == (
            "results" if figure.table is None else "table"
        )
    assert plots.results_figure("heatmap") is plots.rank_heatmap
    with pytest.raises(
        PlotError, match=r"theorem-3-3 is drawn from a table.*theorem_3_3_figure\(table\).*rb\.theory\.theorem_3_3"
    ):
        plots.results_figure("theorem-3-3")
    with pytest.raises(PlotError, match="unknown figure family 'rank-vs-time'; one of: rank-vs-epoch, heatmap"):
        plots.results_figure("rank-vs-time")


def replicate_stats(records, decay, column="avg_rank", table="scalars", layer=None):
    """Per epoch: mean, min and max of ``column`` over the seed replicates of λ = ``decay``."""
    runs = records.runs[np.isclose(records.runs["optimizer.weight_decay"], decay)]
    assert len(runs) == len(SEEDS)
    rows = getattr(records, table)
    rows = rows[rows["run_id"].isin(set(runs["run_id"])) & ((rows["layer"] == layer) if layer else True)]
    return rows.groupby("epoch")[column].agg(["mean", "min", "max"])


def bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_seed_replicates_are_one_mean_line_with_a_min_max_band(seeded):
    fig = plots.rank_vs_epoch(seeded, vary="λ")
    top, bottom = fig.axes
    assert [line.get_label() for line in top.get_lines()] == ["λ = 0", "λ = 0.005"]
    assert len(bottom.get_lines()) == 4 and len(bands(top)) == 2 and len(bands(bottom)) == 4
    assert texts(fig) == ["λ = 0", "λ = 0.005", "train", "test"]
    assert fig.legends[0].get_title().get_text() == "mean of 3 seeds, band: min–max"
    for line, band, decay in zip(top.get_lines(), bands(top), DECAYS):
        stats = replicate_stats(seeded, decay)
        assert np.array_equal(line.get_xdata(), stats.index) and np.allclose(line.get_ydata(), stats["mean"])
        assert to_rgba(band.get_facecolor()[0])[:3] == to_rgba(line.get_color())[:3] and band.get_alpha() == 0.2
        edges = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
        assert np.isclose(edges.min(), stats["min"].min()) and np.isclose(edges.max(), stats["max"].max())
    assert (stats["min"] < stats["max"]).any()  # the seeds differ
    accuracy = replicate_stats(seeded, 5e-3, "test_acc")["mean"]
    assert np.allclose(bottom.get_lines()[3].get_ydata(), accuracy)  # λ = 0.005, test (dashed)

    fig = plots.rank_vs_epoch(seeded, vary="λ", panel="λ")  # one configuration per panel
    assert all(len(ax.get_lines()) == 1 and len(bands(ax)) == 1 for ax in fig.axes[:2])
    fig = plots.rank_vs_epoch(seeded, vary="seed", where={"λ": 0.0})  # a role names the seed: runs apart
    assert texts(fig)[:3] == ["seed = 0", "seed = 1", "seed = 2"] and not bands(fig.axes[0])
    assert fig.legends[0].get_title().get_text() == ""  # no note: nothing is averaged


def test_seed_replicates_in_the_other_families(seeded):
    fig = plots.convergence(seeded, vary="λ")
    assert all(len(ax.get_lines()) == 2 and len(bands(ax)) == 2 for ax in fig.axes)
    distance = replicate_stats(seeded, 5e-3, "distance")["mean"]
    assert np.allclose(fig.axes[0].get_lines()[1].get_ydata(), distance, equal_nan=True)
    fig = plots.norm_ratio(seeded, where={"λ": 5e-3})
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 4 and len(bands(ax)) == 3  # 3 matrices + the line at 1
    ratio = replicate_stats(seeded, 5e-3, "norm_ratio", "layers", "hidden.2")["mean"]
    assert np.allclose(ax.get_lines()[2].get_ydata(), ratio, equal_nan=True)
    assert "mean of 3 seeds" in fig.legends[0].get_title().get_text()
    fig = plots.rank_vs_eps(seeded, vary="λ", eps_grid=[1e-3, 0.05])
    final = replicate_stats(seeded, 0.0).iloc[-1]
    assert np.isclose(fig.axes[0].get_lines()[0].get_ydata()[0], final["mean"]) and len(bands(fig.axes[0])) == 2
    fig = plots.layer_ranks(seeded, vary="λ")
    expected = replicate_stats(seeded, 0.0, "eps_rank", "layers", "hidden.1")["mean"].iloc[-1]
    assert len(fig.axes[0].get_lines()) == 2 and np.isclose(fig.axes[0].get_lines()[0].get_ydata()[1], expected)


def test_heatmap_cells_are_means_over_seeds(seeded):
    for value in ("avg_rank", "test_acc"):
        fig = plots.rank_heatmap(seeded, x="λ", y="B", value=value)
        ax = fig.axes[0]
        (image,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
        final = [replicate_stats(seeded, decay, value).iloc[-1] for decay in DECAYS]
        assert image.get_array().shape == (1, 2) and np.allclose(image.get_array()[0], [f["mean"] for f in final])
        assert [t.get_text() for t in ax.texts] == [f"{f['mean']:.3g}" for f in final]
        assert fig.axes[1].get_ylabel().endswith("(mean of 3 seeds)")
    assert all(f["min"] < f["mean"] < f["max"] for f in final)  # the seeds differ: a mean, not one run


def test_report_draws_seed_replicates_together(seeded):
    chosen = {c.family: c for c in choose_figures(seeded)}
    assert chosen["rank-vs-epoch"].kwargs == {"vary": "optimizer.weight_decay", "panel": None}
    assert chosen["rank-vs-epoch"].where == {}  # no figure per seed
    # the seed of the lowest-rank run
    assert set(chosen["spectra-over-training"].where) == {"train.seed", "data.subset_seed"}


def test_a_sweep_over_a_list_valued_key_is_drawn(tmp_path):
    """Runs that differ in schedule.milestones (a tuple in the runs table): each value is one line,
    not a list of values to pick from."""
    base = {"model": "mlp-bn-2-16", "data": {"name": "digits", "train_size": 128, "test_size": 64},
            "train": {"epochs": 2}, "schedule": {"kind": "multistep", "factor": 0.5}}  # fmt: skip
    configs = [rb.RunConfig.from_dict({**base, "schedule": {**base["schedule"], "milestones": m}}) for m in ([1], [2])]
    rb.train(configs, tmp_path / "results")
    figure = rb.plots.rank_vs_epoch(tmp_path / "results", vary="schedule.milestones")
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert labels[:2] == ["schedule.milestones = (1,)", "schedule.milestones = (2,)"], labels
    picked = rb.plots.rank_vs_epoch(tmp_path / "results", where={"schedule.milestones": (2,)})
    assert picked.axes


def test_rank_vs_eps_of_runs_with_different_matrices(tmp_path):
    """Two models (different weight matrices) in one figure: each run's average over its own matrices."""
    base = {"data": {"name": "digits", "train_size": 128, "test_size": 64}, "train": {"epochs": 1, "batch_size": 16}}
    configs = [rb.RunConfig.from_dict({**base, "model": m}) for m in ("mlp-bn-2-16", "convnet-2-8")]
    rb.train(configs, tmp_path / "results")
    figure = rb.plots.rank_vs_eps(tmp_path / "results", vary="model.name")
    lines = [line for line in figure.axes[0].get_lines() if len(line.get_xdata()) > 2]
    assert len(lines) == 2 and all(np.isfinite(line.get_ydata()).all() and line.get_ydata().max() > 1 for line in lines)


# -- honest figures ------------------------------------------------------------------------------
def test_panels_side_by_side_share_their_y_axis(records):
    """λ = 0's ranks stay near full: on their own axis that noise would look like the effect beside it."""
    fig = plots.rank_vs_epoch(records, vary="B", panel="λ")
    rows = np.array(fig.axes).reshape(2, 2)
    for row in rows:
        assert row[0].get_ylim() == row[1].get_ylim()
    fig = plots.convergence(records, vary="B", panel="λ")
    grid = np.array(fig.axes).reshape(-1, 2)
    assert all(row[0].get_ylim() == row[1].get_ylim() for row in grid)
    fig = plots.layer_spectra(records, vary="B", where={"λ": 5e-3})
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(shown) == 3 and len({ax.get_ylim() for ax in shown}) == 1


def test_a_rank_that_barely_moves_does_not_fill_the_axis(records):
    """A change of a fraction of one rank (21 → 20.86 in a user's run) spans at least 10 % of the
    full rank (16 here), not the whole panel; a real effect keeps its own, tighter range."""
    import dataclasses

    one = records.runs["run_id"].iloc[0]
    flat = records.scalars[records.scalars["run_id"] == one].copy()
    flat["avg_rank"] = 15.0 - 0.14 * (flat["epoch"] % 2)
    quiet = dataclasses.replace(records, scalars=flat, runs=records.runs[records.runs["run_id"] == one])
    low, high = plots.rank_vs_epoch(quiet).axes[0].get_ylim()
    assert high - low == pytest.approx(1.6) and low <= 14.86 and high >= 15.0 and high <= 16 * 1.02
    low, high = plots.rank_vs_epoch(records, vary="B", panel="λ").axes[0].get_ylim()
    assert high - low > 1.6  # the grid's ranks move more: matplotlib's own limits


def test_heatmap_colour_scale_is_the_quantitys_whole_range(records):
    """Accuracy on 0–1 and the average rank on 0 to the full rank: a difference of 0.01 does not
    span the whole colour bar."""
    for value, high in (("test_acc", 1.0), ("avg_rank", 16.0)):  # mlp-bn-3-16: three counted 16-wide matrices
        fig = plots.rank_heatmap(records, x="B", y="λ", value=value)
        (image,) = [a for a in fig.axes[0].get_children() if isinstance(a, AxesImage)]
        assert (image.norm.vmin, image.norm.vmax) == (0.0, high)
        assert fig.axes[1].get_ylim() == (0.0, high)  # the colour bar shows that range
        cells = image.get_array().compressed()
        assert 0 < cells.min() and cells.max() <= high


def test_figure_family_numbers_are_unique_and_in_order():
    numbers = [f.number for f in plots.FIGURES.values() if f.table is None]
    assert numbers == list(range(1, len(numbers) + 1))
    helptext = CliRunner().invoke(main, ["plot", "--help"]).output
    assert [int(n) for n in re.findall(r"^\s+[a-z-]+\s+(\d+):", helptext, re.MULTILINE)] == numbers


def test_a_value_has_one_colour_in_every_figure(records):
    """B = 32 is drawn in its colour whether or not B = 16 is in the figure too."""
    both = plots.rank_vs_epoch(records, vary="B", where={"λ": 5e-3})
    alone = plots.rank_vs_epoch(records, vary="B", where={"λ": 5e-3, "B": 32})
    colour = {line.get_label(): line.get_color() for line in both.axes[0].get_lines()}
    assert colour["B = 16"] != colour["B = 32"] == alone.axes[0].get_lines()[0].get_color()
    spectra = plots.layer_spectra(records, vary="B", where={"B": 32, "λ": 5e-3})
    assert spectra.axes[0].get_lines()[0].get_color() == colour["B = 32"]
