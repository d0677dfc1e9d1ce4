"""The HTML report: self-contained, every chosen figure and the run table, problems, provenance."""

import base64
import html
import io
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.colors import to_hex
from PIL import Image

import rankbias as rb
from rankbias import report
from rankbias.cli import main
from rankbias.compress import smallest
from rankbias.compress.figure import compression_figure
from rankbias.conventions import LAMBDA_NOTE
from rankbias.plots.style import OKABE_ITO, STYLE
from rankbias.report import choose_figures, write_report
from rankbias.report.page import table_html
from rankbias.report.theory_section import _overview, _verdicts
from rankbias.store.run_store import RunStore

from .stored_sweeps import build_regression, build_step_norms, build_with_problems


class Page(HTMLParser):
    """Collects the tags and attributes of a page (and fails on nothing: html.parser is lenient)."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.rows, self.h3 = [], [], 0, []
        self._in_h3 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs)
        self._in_h3 = tag == "h3"

    def handle_data(self, data):
        if self._in_h3:
            self.h3.append(data)

    def handle_endtag(self, tag):
        self._in_h3 = False


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return build_with_problems(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def written(sweep):
    root, _, _ = sweep
    path = write_report(root)
    return path, read(path)


def read(path) -> str:
    """A page's text without the line-break hints of its tables (``<wbr>``), so tests find names whole."""
    return path.read_text(encoding="utf-8").replace("<wbr>", "")


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def section(text: str, anchor: str) -> str:
    """The HTML of one section of the page (from its heading to the next one)."""
    start = text.index(f'<h2 id="{anchor}">')
    end = text.find("<h2 ", start + 1)
    return text[start : end if end > 0 else len(text)]


def decoded(page: Page) -> list:
    """Every inlined image of the page, decoded (fails on one that is not a PNG)."""
    pictures = []
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        picture.load()
        assert picture.format == "PNG" and picture.size[0] > 200 and picture.size[1] > 100
        pictures.append(picture)
    return pictures


def nav(text: str) -> str:
    return text[text.index("<nav>") : text.index("</nav>")]


def test_report_is_self_contained_and_has_every_chosen_figure(sweep, written):
    root, diverged, failed = sweep
    path, text = written
    assert path == root / "report.html"
    assert "http://" not in text and "https://" not in text and "<link" not in text
    page = parse(text)
    assert not [a for t, a in page.tags if t == "script" and "src" in a]
    drawable, skipped = report._drawable(rb.load(root))
    assert (
        sorted(skipped) == sorted([diverged, failed])
        and f"Not drawn (fewer than two records; see above): {', '.join(skipped)}" in text
    )
    chosen = choose_figures(drawable)
    assert len(parse(section(text, "figures")).images) == len(chosen) >= 8
    assert "could not be drawn" not in text
    assert decoded(page) and len(page.images) > len(chosen)  # + the theory checks' figures
    titles = [t for t in page.h3 if re.match(r"Figure \d+\. ", t)]
    assert titles[: len(chosen)] == [f"Figure {i}. {c.title}" for i, c in enumerate(chosen, start=1)]
    # every figure of the page numbered once, in page order (the theory figures go on)
    assert [int(re.match(r"Figure (\d+)", t).group(1)) for t in titles] == list(range(1, len(titles) + 1))
    assert {c.family for c in chosen} >= {
        "rank-vs-epoch", "heatmap", "layer-ranks", "layer-spectra", "convergence", "norm-ratio", "rank-vs-eps",
        "spectra-over-training",
    }


def test_run_table_problems_configuration_and_provenance(sweep, written, monkeypatch):
    root, diverged, failed = sweep
    _, text = written
    records = rb.load(root)
    table = text[
        text.index('<table class="sortable">') : text.index("</table>", text.index('<table class="sortable">'))
    ]
    assert table.count("<tr") == 1 + len(records.runs)  # header + one row per run
    for run_id in records.runs["run_id"]:
        assert run_id in table
    final = records.scalars.sort_values("epoch").groupby("run_id").tail(1)
    for rank in final["avg_rank"]:
        assert f"<td>{rank:.4g}</td>" in table
    problems = text[text.index('id="problems"') : text.index('id="figures"')]
    assert diverged in problems and "training loss is not finite at epoch 1" in problems
    assert failed in problems and "RuntimeError: CUDA out of memory (written by the test)" in problems
    assert LAMBDA_NOTE.replace("'", "&#x27;") in text or LAMBDA_NOTE in text
    configuration = text[text.index('id="configuration"') : text.index('id="runs"')]
    assert (
        "B (train.batch_size)" in configuration
        and "16, 32" in configuration
        and "λ (optimizer.weight_decay)" in configuration
    )
    provenance = text[text.index('id="provenance"') :]
    files = sorted(root.glob("*/provenance.json"))
    if files:  # written by the training session when the store has provenance
        for key, value in json.loads(files[0].read_text()).items():
            if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) > 3:
                assert str(value).replace("&", "&amp;").replace("<", "&lt;") in provenance, key
                break
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # the tables only: quick
    (root / records.runs["run_id"].iloc[0] / "provenance.json").write_text(
        json.dumps({"torch": "9.9.9-test", "start_time": 1.7e9})
    )
    text = read(write_report(root, root.parent / "prov.html"))
    assert "9.9.9-test" in text[text.index('id="provenance"') :] and "2023-11-14 22:13:20 UTC" in text


def test_report_at_another_eps_and_norm(sweep, tmp_path, monkeypatch):
    root, _, _ = sweep
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # the table only: quick
    path = write_report(root, tmp_path / "r.html", eps=0.05, norm="spectral")
    text = read(path)
    assert "ε = 0.05" in text and "spectral norm" in text and "recomputed from the stored singular values" in text
    records = rb.load(root, eps=0.05, norm="spectral")
    final = records.scalars.sort_values("epoch").groupby("run_id").tail(1)
    stored = rb.load(root).scalars.sort_values("epoch").groupby("run_id").tail(1)
    assert not np.allclose(final["avg_rank"], stored["avg_rank"])
    for rank in final["avg_rank"]:
        assert f"<td>{rank:.4g}</td>" in text
    drawable, _ = report._drawable(records)
    chosen = {c.family: c for c in choose_figures(drawable)}
    figure = chosen["rank-vs-epoch"].draw(drawable, 0.05, "spectral")
    assert "ε = 0.05, spectral norm" in figure.axes[0].get_ylabel()
    figure = chosen["layer-spectra"].draw(drawable, 0.05, "spectral")
    assert "\\|W\\|_2" in figure.axes[0].get_ylabel() and list(figure.axes[0].get_lines()[-1].get_ydata()) == (
        [0.05, 0.05]
    )


def test_report_command_writes_figure_files(sweep, tmp_path, monkeypatch):
    root, _, _ = sweep
    few = choose_figures(rb.load(root))[:2]
    monkeypatch.setattr(report, "choose_figures", lambda records: few)
    result = CliRunner().invoke(
        main, ["report", str(root), "--out", str(tmp_path / "rep"), "--eps", "1e-2", "--norm", "fro"]
    )
    assert result.exit_code == 0, result.output
    assert f"report written to {tmp_path / 'rep' / 'report.html'}" in result.output
    for chosen in few:
        png, pdf = (
            tmp_path / "rep" / "figures" / f"{chosen.name}.png",
            tmp_path / "rep" / "figures" / f"{chosen.name}.pdf",
        )
        Image.open(png).load()
        assert pdf.read_bytes().startswith(b"%PDF")
    # the theory section's figures are written too: Prediction 4.1's (Thm 3.3 has none: 3 epochs of
    # Σμλ' ≈ 0.01 never reach log(2/ε), every bound is infinite)
    theory = ["theory_prediction_4_1"]
    for name in theory:
        Image.open(tmp_path / "rep" / "figures" / f"{name}.png").load()
    assert len(list((tmp_path / "rep" / "figures").iterdir())) == 2 * (len(few) + len(theory))


def test_figures_chosen_from_what_varied(sweep, tmp_path):
    records = rb.load(sweep[0])  # B × λ, plus a run at another μ
    chosen = choose_figures(records)
    first = chosen[0]
    assert first.family == "rank-vs-epoch" and first.kwargs == {"vary": "train.batch_size", "panel": "optimizer.lr"}
    assert [c.where for c in chosen if c.family == "rank-vs-epoch"] == [
        {"optimizer.weight_decay": 0.0},
        {"optimizer.weight_decay": 5e-3},
    ]
    (heatmap,) = [c for c in chosen if c.family == "heatmap" and not c.about]
    assert heatmap.kwargs == {"x": "train.batch_size", "y": "optimizer.lr", "panel": "optimizer.weight_decay"}
    assert {c.kwargs["vary"] for c in chosen if c.family == "convergence"} == {"optimizer.weight_decay"}
    assert not [c for c in chosen if c.family == "weight-decay"]  # classification
    regression = rb.load(build_regression(tmp_path / "reg"))
    families = [c.family for c in choose_figures(regression)]
    assert "weight-decay" in families and "heatmap" not in families and "layer-ranks" not in families


def test_report_renders_in_chromium(written, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed")
    path, _ = written
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp()}"]  # fmt: skip
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,3000", path.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (3000, 1200) and (picture < 128).mean() > 0.005  # text and figures drawn


# -- theory checks and compression ---------------------------------------------------------------
def overview_counts(theory_html: str, check: str) -> list[int]:
    """checked, trivial, informative, and of the informative rows holds, fails, no prediction, of
    ``check`` in the section's overview table."""
    row = re.search(
        rf'<tr><td class="text">{check}</td><td class="text">[^<]*</td>((?:<td>\d+</td>){{6}})</tr>', theory_html
    )
    assert row, check
    return [int(v) for v in re.findall(r"<td>(\d+)</td>", row.group(1))]


def test_theory_section_from_the_records(sweep, written):
    root, diverged, failed = sweep
    _, text = written
    assert '<a href="#theory">Theory checks</a>' in nav(text)
    theory = section(text, "theory")
    drawable, _ = report._drawable(rb.load(root))
    checks = rb.theory.record_checks(drawable)
    for check in ("gsgp_theorem_3_3", "gp_sgd_noise"):
        rows = checks[checks["check"] == check]
        informative = rows[~rows["trivial"].astype(bool)]
        assert overview_counts(theory, check) == [
            len(rows),
            len(rows) - len(informative),
            len(informative),
            int(informative["holds"].eq(True).sum()),
            int(informative["holds"].eq(False).sum()),
            int(informative["holds"].isna().sum()),
        ]
        assert f'id="theory-{check}"' in theory and f"<summary>All {len(rows)} rows</summary>" in theory
    # Prediction 4.1: one row per knob that varies among the drawn runs (μ differs only for the diverged
    # run); one seed gives no interval, so neither knob can hold or fail: 2 knobs, both without a prediction
    tests = rb.theory.prediction_4_1(drawable).tests
    assert list(tests["symbol"]) == ["B", "λ"] and set(tests["verdict"]) == {"inconclusive"}
    assert overview_counts(theory, "gsgp_prediction_4_1") == [2, 0, 2, 0, 0, 2]
    prediction = theory[theory.index('id="theory-gsgp_prediction_4_1"') :]
    assert "<strong>B: inconclusive; λ: inconclusive.</strong>" in prediction and "pairs agree" not in theory
    verdicts = prediction[: prediction.index("</table>")]
    assert verdicts.count("<tr>") == 1 + len(tests)  # header + one row per knob
    for row in tests.itertuples():
        assert re.search(
            rf'<td class="text">{row.symbol}</td><td class="text">{row.verdict}</td>'
            rf'<td class="text">{row.effect:.1f} %</td>',
            verdicts,
        )
        assert html.escape(row.why) in verdicts
    assert f"<summary>All {len(rb.theory.prediction_4_1(drawable).blocks)} blocks of runs</summary>" in prediction
    # Lemma 3.2 needs step norms, which this sweep did not record: said once, no table
    assert "Lemma 3.2 is not shown" in theory and 'id="theory-gsgp_lemma_3_2"' not in theory
    assert diverged not in theory and failed not in theory  # fewer than two records: nothing to check
    images = parse(theory).images
    # Thm 3.3: 3 epochs of Σμλ' ≈ 0.01 never reach log(2/ε): every bound is infinite, no figure but a note
    bounds = checks.loc[checks["check"] == "gsgp_theorem_3_3", "bound"].astype(float)
    assert not np.isfinite(bounds).any() and "No figure: every bound is infinite" in theory
    assert [re.sub(r"Figure \d+\. ", "", i["alt"]) for i in images] == ["GSGP Prediction 4.1"]
    assert len(decoded(parse(theory))) == 1
    assert "B\u00a0=\u00a016, λ\u00a0=\u00a00.005" in theory  # runs named by their settings
    # no compressed run: no compression section at all
    assert 'id="compression"' not in text and "Compression" not in nav(text)


def test_lemma_3_2_in_the_report_when_step_norms_were_recorded(tmp_path, monkeypatch):
    root = build_step_norms(tmp_path / "steps")
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # the theory section only: quick
    text = read(write_report(root))
    theory = section(text, "theory")
    lemma = rb.theory.lemma_3_2(rb.load(root))
    assert 'id="theory-gsgp_lemma_3_2"' in theory and "Lemma 3.2 is not shown" not in theory
    trivial = int(lemma["trivial"].sum())
    assert overview_counts(theory, "gsgp_lemma_3_2") == [len(lemma), trivial, len(lemma) - trivial] + [
        len(lemma) - trivial, 0, 0
    ]
    assert lemma["holds"].all()  # an identity on plain SGD
    # the figure shows the run where the bound has teeth: B = 8 has non-trivial rows, B = 32 none at n ≥ 1
    small = rb.load(root).runs.set_index("train.batch_size").loc[8, "run_id"]
    figure = theory[theory.index('id="theory_lemma_3_2"') :]
    assert f"Run {small} (B\u00a0=\u00a08)" in figure[: figure.index("</figure>")]
    alts = [re.sub(r"Figure \d+\. ", "", i["alt"]) for i in parse(theory).images]
    # Thm 3.3: every bound infinite
    assert alts == ["GSGP Lemma 3.2", "GSGP Prediction 4.1"] and len(decoded(parse(theory))) == 2


def test_compression_section_when_runs_were_compressed(sweep, tmp_path, monkeypatch):
    root, diverged, _ = sweep
    copy = tmp_path / "compressed"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("report.html"))
    # the run that failed before its first record
    with pytest.warns(UserWarning, match="no checkpoint, not compressed"):
        rb.compress_run(copy, eps=[1e-2, 0.3])
    summary, _ = rb.read_compressed(copy)
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # quick
    text = read(write_report(copy))
    assert '<a href="#compression">Compression</a>' in nav(text)
    assert "http://" not in text and "https://" not in text
    compression = section(text, "compression")
    (image,) = parse(compression).images
    # numbered after the theory section's figure (Prediction 4.1)
    assert image["alt"] == "Figure 2. Compression: accuracy against size (fro norm)" and decoded(parse(compression))
    # the smallest network of every finished run, as rankbias.compress.smallest says; the diverged run left out
    done = summary[summary["run_id"] != diverged]
    best = smallest(done, 0.01)
    table = compression[compression.index("Smallest network") :]
    assert table.count("<tr>") == 1 + len(best) == 1 + done["run_id"].nunique()
    for row in best.itertuples():
        assert re.search(rf'<td class="text">{row.run_id}</td>.*?<td>{row.params_after}</td>', table)
    assert f"Left out (not done): {diverged}" in compression and diverged not in table
    assert "μ" not in table  # μ differs only for the diverged run: not a setting of the runs shown


def test_prediction_overview_counts_knobs_by_verdict():
    nan = float("nan")
    tests = pd.DataFrame({"knob": ["train.batch_size", "optimizer.lr", "optimizer.weight_decay"],
                          "symbol": ["B", "μ", "λ"],
                          "verdict": ["holds without weight decay", "fails", "holds"],
                          "why": ["as large at λ = 0", "other way", "falls"],
                          "effect": [12.0, -8.0, 30.0], "ci_low": [10.0, -9.0, nan], "ci_high": [14.0, -7.0, nan],
                          "p": [0.01, 0.9, 0.02], "seeds": [[0, 1], [0, 1], [0]], "blocks": [2, 2, 4],
                          "control_effect": [11.0, nan, nan], "control_ci_low": [9.0, nan, nan],
                          "control_ci_high": [13.0, nan, nan]})
    overview = _overview(pd.DataFrame({"check": []}), tests).replace("<wbr>", "")
    # holds without weight decay: no prediction
    assert overview_counts(overview, "gsgp_prediction_4_1") == [3, 0, 3, 1, 1, 1]
    verdicts = _verdicts(tests)
    assert list(verdicts.columns) == [
        "knob", "verdict", "effect [95 % interval]", "p", "λ = 0 control [95 % interval]", "seeds", "blocks", "why"
    ]
    assert verdicts["effect [95 % interval]"].tolist() == ["12.0 % [10.0, 14.0]", "-8.0 % [-9.0, -7.0]", "30.0 %"]
    assert verdicts["λ = 0 control [95 % interval]"].tolist() == ["11.0 % [9.0, 13.0]", "", ""]
    assert verdicts["seeds"].tolist() == [2, 2, 1] and verdicts["blocks"].tolist() == [2, 2, 4]
    no_control = _verdicts(tests.drop(columns=["control_effect", "control_ci_low", "control_ci_high"]))
    assert "λ = 0 control [95 % interval]" not in no_control


def test_no_theory_section_without_records(tmp_path):
    base = rb.RunConfig.from_dict(
        {"model": "mlp-bn-2-16", "data": {"name": "digits", "train_size": 64, "test_size": 32}}
    )
    store = RunStore(tmp_path, base.run_id())
    store.write_config(base.to_dict())
    store.set_status("failed", None, "RuntimeError: before the first record (written by the test)")
    text = read(write_report(tmp_path))
    assert 'id="theory"' not in text and "Theory checks" not in text and 'id="compression"' not in text
    assert "before the first record" in section(text, "problems")


def test_theory_and_compression_figures_use_the_package_style(sweep, tmp_path):
    records = rb.load(sweep[0])
    figures_ = [rb.theory.figures.theorem_3_3_figure(rb.theory.theorem_3_3(records)),
                rb.theory.figures.prediction_figure(rb.theory.prediction_4_1(records).tests)]
    table = pd.DataFrame({"run_id": ["a", "a"], "eps": [0.01, 0.3], "norm": "fro", "params_before": 100,
                          "params_after": [90, 40], "test_acc_before": 0.9, "test_acc_after": [0.9, 0.5]})
    figures_.append(compression_figure(table))
    for figure in figures_:
        assert figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
        ax = figure.axes[0]
        assert (
            ax.title.get_fontsize() == STYLE["axes.titlesize"]
            and ax.xaxis.label.get_fontsize() == STYLE["axes.labelsize"]
        )
        assert not ax.spines["top"].get_visible()
        drawn = [
            to_hex(line.get_color())
            for line in ax.get_lines()
            if line.get_label() and not line.get_label().startswith("_")
        ]
        drawn += [to_hex(patch.get_facecolor()) for patch in ax.patches]
        assert drawn and set(drawn) <= {c.lower() for c in OKABE_ITO} | {"#999999"}


# -- a folder of different models and schedules; honest figures ------------------------------------
def build_mixed(root):
    """The README's mixed folder in small: mlp-bn-2-16 over B, convnet-2-8 over λ, and one mlp-bn-2-16
    run with another length and schedule."""
    base = {"data": {"name": "digits", "train_size": 128, "test_size": 64}, "train": {"epochs": 2, "batch_size": 16},
            "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3}}  # fmt: skip
    configs = [rb.RunConfig.from_dict({**base, "model": "mlp-bn-2-16"}).replace(**{"train.batch_size": b})
               for b in (16, 32)]  # fmt: skip
    configs += [rb.RunConfig.from_dict({**base, "model": "convnet-2-8"}).replace(**{"optimizer.weight_decay": w})
                for w in (0.0, 5e-3)]  # fmt: skip
    other = {**base, "model": "mlp-bn-2-16", "train": {"epochs": 3, "batch_size": 8},
             "schedule": {"kind": "multistep", "milestones": [2], "factor": 0.5}}  # fmt: skip
    rb.train([*configs, rb.RunConfig.from_dict(other)], root)
    return root


def test_a_mixed_folder_is_drawn_group_by_group(tmp_path):
    import warnings

    root = build_mixed(tmp_path / "mixed")
    records = rb.load(root)
    groups = report.group_runs(records.runs)
    models = lambda g: set(records.runs.set_index("run_id").loc[g.run_ids, "model.name"])
    assert [len(g.run_ids) for g in groups] == [2, 2, 1] and all(len(models(g)) == 1 for g in groups)
    assert [g.varied for g in groups] == [["optimizer.weight_decay"], ["train.batch_size"], []]  # largest, then by name
    assert groups[2].apart == {"train.epochs": 3, "schedule.factor": 0.5, "schedule.kind": "multistep",
                               "schedule.milestones": (2,)}
    chosen = choose_figures(records)
    assert {c.group.number for c in chosen} == {1, 2, 3}
    assert sum(c.family == "rank-vs-epoch" for c in chosen) == 3  # one per group, none mixing two
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = read(write_report(root))
    assert not [w for w in caught if "matplotlib" in w.filename or "layout" in str(w.message)], caught
    figures = section(text, "figures")
    assert "could not be drawn" not in figures and len(parse(figures).images) == len(chosen)
    assert "drawn in 3 groups" in figures and figures.count('<h3 class="group"') == 3
    for c in chosen:  # each figure draws its group's runs only
        drawn = c.draw(records)
        legend = " ".join(t.get_text() for legend in drawn.legends for t in legend.get_texts())
        assert ("B = 8" in legend) == (c.group.number == 3 and c.kwargs.get("vary") == "train.batch_size")


def test_never_a_page_without_figures_when_runs_have_records(sweep, tmp_path, monkeypatch):
    root, _, _ = sweep
    broken = choose_figures(rb.load(root))[:2]
    for c in broken:
        monkeypatch.setattr(c, "kwargs", {"vary": "no-such-key"})
    monkeypatch.setattr(report, "choose_figures", lambda records: broken)
    monkeypatch.setattr(report, "theory_section", lambda *args: None)
    figures = section(read(write_report(root, tmp_path / "r.html")), "figures")
    assert figures.count("could not be drawn") == 2
    drawable = report._drawable(rb.load(root))[0]
    assert "each run on its own" in figures and len(parse(figures).images) == len(drawable.runs)


def test_theory_counts_no_trivial_row_as_support(sweep, written):
    _, text = written
    theory = section(text, "theory")
    rows = rb.theory.record_checks(report._drawable(rb.load(sweep[0]))[0])
    theorem = rows[rows["check"] == "gsgp_theorem_3_3"]
    assert theorem["trivial"].all() and theorem["holds"].eq(True).all()  # every row "holds" trivially
    assert f"All {len(theorem)} rows are trivial" in theory and "Holds in" not in theory


def test_a_diverged_run_is_marked_in_the_figures_and_named(sweep, tmp_path):
    root, diverged, _ = sweep
    records = rb.load(root)
    assert rb.plots.select.left_out(records) == {diverged: "diverged"}
    fig = rb.plots.rank_vs_epoch(records, vary="B", panel="μ", where={"λ": 5e-3})
    crosses = [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "x"]
    last = records.scalars[records.scalars["run_id"] == diverged].sort_values("epoch").iloc[-1]
    assert [(c.get_xdata()[0], c.get_ydata()[0]) for c in crosses] == [(last["epoch"], last["avg_rank"])]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "diverged: its last record" in labels
    assert "Marked ×" not in read(write_report(root, tmp_path / "r.html"))  # drawn runs only: it has one record


def test_theorem_figure_takes_the_pages_colours_and_order():
    rows = pd.DataFrame({"check": "gsgp_theorem_3_3", "run_id": ["a", "a", "b", "b"], "counted": True,
                         "eps": [1e-3, 0.1] * 2, "measured": [5.0, 2.0, 9.0, 4.0], "bound": [8.0, 3.0, 20.0, 10.0],
                         "approx_rank": 1.0, "smaller_dim": 16})  # fmt: skip
    labels = {"b": "B = 8", "a": "B = 32"}  # page order: B = 8 first
    styles = {"b": {"color": OKABE_ITO[0], "marker": "o"}, "a": {"color": OKABE_ITO[2], "marker": "^"}}
    fig = rb.theory.figures.theorem_3_3_figure(rows, labels=labels, styles=styles)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["B = 8", "B = 32"]
    drawn = [line for line in ax.get_lines() if line.get_linestyle() == "-" and line.get_marker() != "None"]
    assert [to_hex(line.get_color()) for line in drawn] == [OKABE_ITO[0].lower(), OKABE_ITO[2].lower()]


def test_compression_points_are_labelled_with_eps_and_the_axis_spans_them():
    table = pd.DataFrame({"run_id": "a", "eps": [1e-3, 1e-2, 0.3], "norm": "fro", "params_before": 1000,
                          "params_after": [1000, 900, 400], "test_acc_before": 0.9,
                          "test_acc_after": [0.9, 0.9, 0.5]})  # fmt: skip
    ax = compression_figure(table).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1e-2", "1e-3", "3e-1"]
    low, high = ax.get_xlim()
    assert ax.get_xscale() == "linear" and low < 400 and high > 1000  # 400–1000 is no decade: not log
    wide = table.assign(params_after=[1000, 90, 4])
    ax = compression_figure(wide).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 4 and ax.get_xlim()[1] > 1000


def test_reproduce_page_tables_fit_and_captions_say_what_to_see(tmp_path):
    from rankbias.reproduce import page as reproduce_page

    out = tmp_path / "gsgp-fig7" / "quick"
    out.mkdir(parents=True)
    test = {"test": "trend", "knob": "train.batch_size", **{f"field_number_{i}": float(i) for i in range(16)}}
    summary = {"claim": "the average rank decreases as B decreases", "verdict": "inconclusive", "why": "few seeds",
               "runs": 6, "seeds": [0, 1], "tests": [test, test], "not_learned": ["abc123"], "model": "mlp-bn-4-128",
               "data": "digits"}  # fmt: skip
    (out / "claim.json").write_text(json.dumps(summary))
    Image.new("RGB", (300, 200), "white").save(out / "figure.png")
    text = reproduce_page.write(tmp_path, "quick").read_text(encoding="utf-8").replace("<wbr>", "")
    tests = text[text.index("<h3>Tests</h3>") : text.index("</table>", text.index("<h3>Tests</h3>"))]
    assert tests.count("<tr>") == 1 + 18 and "<th>trend 1</th><th>trend 2</th>" in tests  # 3 columns, not 18
    assert "Left out of the check" in text and "abc123" in text
    (caption,) = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert "What to see: the average rank decreases as B decreases" in caption and "lines: B" in caption
    assert "control_<wbr>ci_<wbr>high" in table_html(pd.DataFrame({"control_ci_high": [1.0]}))
