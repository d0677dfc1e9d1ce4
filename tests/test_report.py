"""The HTML report: self-contained, every chosen figure and the run table, problems, provenance."""

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import rankbias as rb
import rankbias.report as report
from rankbias.cli import main
from rankbias.conventions import LAMBDA_NOTE
from rankbias.report import choose_figures, write_report

from .stored_sweeps import build_regression, build_with_problems


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
    return path, path.read_text(encoding="utf-8")


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_report_is_self_contained_and_has_every_chosen_figure(sweep, written):
    root, diverged, failed = sweep
    path, text = written
    assert path == root / "report.html"
    assert "http://" not in text and "https://" not in text and "<link" not in text
    page = parse(text)
    assert not [a for t, a in page.tags if t == "script" and "src" in a]
    drawable, skipped = report._drawable(rb.load(root))
    assert sorted(skipped) == sorted([diverged, failed]) and f"Not drawn (fewer than two records; see above): {', '.join(skipped)}" in text
    chosen = choose_figures(drawable)
    assert len(page.images) == len(chosen) >= 8
    assert "could not be drawn" not in text
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        picture.load()
        assert picture.size[0] > 200 and picture.size[1] > 100
    titles = [t for t in page.h3 if re.match(r"\d\. ", t)]
    assert titles == [c.title for c in chosen]
    assert {c.family for c in chosen} >= {"rank-vs-epoch", "heatmap", "layer-ranks", "layer-spectra", "convergence", "norm-ratio", "rank-vs-eps", "spectra-over-training"}


def test_run_table_problems_configuration_and_provenance(sweep, written, monkeypatch):
    root, diverged, failed = sweep
    _, text = written
    records = rb.load(root)
    table = text[text.index('<table class="sortable">') : text.index("</table>", text.index('<table class="sortable">'))]
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
    assert "B (train.batch_size)" in configuration and "16, 32" in configuration and "λ (optimizer.weight_decay)" in configuration
    provenance = text[text.index('id="provenance"') :]
    files = sorted(root.glob("*/provenance.json"))
    if files:  # written by the training session when the store has provenance
        for key, value in json.loads(files[0].read_text()).items():
            if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) > 3:
                assert str(value).replace("&", "&amp;").replace("<", "&lt;") in provenance, key
                break
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # the tables only: quick
    (root / records.runs["run_id"].iloc[0] / "provenance.json").write_text(json.dumps({"torch": "9.9.9-test", "start_time": 1.7e9}))
    text = write_report(root, root.parent / "prov.html").read_text(encoding="utf-8")
    assert "9.9.9-test" in text[text.index('id="provenance"') :] and "2023-11-14 22:13:20 UTC" in text


def test_report_at_another_eps_and_norm(sweep, tmp_path, monkeypatch):
    root, _, _ = sweep
    monkeypatch.setattr(report, "choose_figures", lambda records: [])  # the table only: quick
    path = write_report(root, tmp_path / "r.html", eps=0.05, norm="spectral")
    text = path.read_text(encoding="utf-8")
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
    assert "\\|W\\|_2" in figure.axes[0].get_ylabel() and list(figure.axes[0].get_lines()[-1].get_ydata()) == [0.05, 0.05]


def test_report_command_writes_figure_files(sweep, tmp_path, monkeypatch):
    root, _, _ = sweep
    few = choose_figures(rb.load(root))[:2]
    monkeypatch.setattr(report, "choose_figures", lambda records: few)
    result = CliRunner().invoke(main, ["report", str(root), "--out", str(tmp_path / "rep"), "--eps", "1e-2", "--norm", "fro"])
    assert result.exit_code == 0, result.output
    assert f"report written to {tmp_path / 'rep' / 'report.html'}" in result.output
    for chosen in few:
        png, pdf = tmp_path / "rep" / "figures" / f"{chosen.name}.png", tmp_path / "rep" / "figures" / f"{chosen.name}.pdf"
        Image.open(png).load()
        assert pdf.read_bytes().startswith(b"%PDF")
    assert len(list((tmp_path / "rep" / "figures").iterdir())) == 4


def test_figures_chosen_from_what_varied(sweep, tmp_path):
    records = rb.load(sweep[0])  # B × λ, plus a run at another μ
    chosen = choose_figures(records)
    first = chosen[0]
    assert first.family == "rank-vs-epoch" and first.kwargs == {"vary": "train.batch_size", "panel": "optimizer.lr"}
    assert [c.where for c in chosen if c.family == "rank-vs-epoch"] == [{"optimizer.weight_decay": 0.0}, {"optimizer.weight_decay": 5e-3}]
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
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}"]  # fmt: skip
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,3000", path.resolve().as_uri()], capture_output=True, timeout=120)
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (3000, 1200) and (picture < 128).mean() > 0.005  # text and figures drawn
