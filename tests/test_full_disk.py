"""A full disk or a read-only folder under `rankbias report`, `rankbias plot --out` and `rankbias
compress`: one `error: cannot write under ...` line, exit status 2, no traceback, the files written
before unchanged and no temporary file left."""

import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

import rankbias as rb
from rankbias.cli import main

from .conftest import small_config


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One finished run (mlp-bn-2-16 on a digits subset, 3 records), copied by each test."""
    root = tmp_path_factory.mktemp("full_disk")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKBIAS_OFFLINE", "1")
        run = rb.train(small_config(), root / "results", data_root=root / "data")
    assert run.state == "done"
    return root / "results", run.run_id


@pytest.fixture
def results(stored, tmp_path, monkeypatch):
    source, run_id = stored
    monkeypatch.setenv("RANKBIAS_DATA", str(source.parent / "data"))
    target = tmp_path / "results"
    shutil.copytree(source, target)
    return target, run_id


def _invoke(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(args: list[str]) -> None:
    result = _invoke(args)
    assert result.exit_code == 0, result.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails_cleanly(args: list[str], where: Path) -> str:
    """Run the command that must fail; check its one error line and return it."""
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (OSError, RuntimeError))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write under "), result.stderr
    assert str(where) in lines[0] and "MiB free" in lines[0]
    assert not list(where.rglob("*.tmp"))
    return lines[0]


def _savefig_to_a_full_disk(monkeypatch) -> None:
    """A figure written to a file fails as on a full disk; one drawn into memory (the report's
    inlined PNG) still works."""
    savefig = Figure.savefig

    def patched(self, fname, *args, **kwargs):
        if isinstance(fname, (str, os.PathLike)):
            _full()
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", patched)


# -- a full disk (simulated: the tests may run as root) --------------------------------------------
def test_report_on_a_full_disk_keeps_the_old_page(results, monkeypatch):
    folder, _ = results
    _ok(["report", folder])
    before = (folder / "report.html").read_bytes()
    monkeypatch.setattr(Path, "write_text", _full)
    line = _fails_cleanly(["report", folder], folder)
    assert "No space left on device" in line
    assert (folder / "report.html").read_bytes() == before


def test_report_dir_on_a_full_disk_keeps_the_old_figures(results, tmp_path, monkeypatch):
    folder, _ = results
    out = tmp_path / "site"
    _ok(["report", folder, "--out", out])
    before = _snapshot(out)
    assert "report.html" in before and any(name.endswith(".pdf") for name in before)
    _savefig_to_a_full_disk(monkeypatch)
    _fails_cleanly(["report", folder, "--out", out], out / "figures")
    assert _snapshot(out) == before


@pytest.mark.parametrize("patch", ["savefig", "replace"])
def test_plot_on_a_full_disk_keeps_the_old_figure(results, tmp_path, monkeypatch, patch):
    folder, _ = results
    out = tmp_path / "figs" / "rank.png"
    _ok(["plot", folder, "rank-vs-epoch", "--out", out])
    before = out.read_bytes()
    if patch == "savefig":
        _savefig_to_a_full_disk(monkeypatch)
    else:  # the temporary file is written whole, then the rename fails: it is removed
        monkeypatch.setattr(os, "replace", _full)
    _fails_cleanly(["plot", folder, "rank-vs-epoch", "--out", out], out.parent)
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["rank.png"]


def test_plot_to_a_new_file_on_a_full_disk_leaves_nothing(results, tmp_path, monkeypatch):
    folder, _ = results
    out = tmp_path / "figs" / "rank.pdf"
    _savefig_to_a_full_disk(monkeypatch)
    _fails_cleanly(["plot", folder, "rank-vs-epoch", "--out", out], out.parent)
    assert not list(out.parent.iterdir())


@pytest.mark.parametrize("patch", ["to_parquet", "replace"])
def test_compress_on_a_full_disk_keeps_the_earlier_results(results, monkeypatch, patch):
    folder, run_id = results
    run = folder / run_id
    _ok(["compress", run, "--eps", "0.05"])
    _ok(["compress", run, "--eps", "0.1"])
    compressed = run / "compress"
    before = _snapshot(compressed)
    assert len(before) == 4  # a summary and a layer table per ε
    if patch == "to_parquet":
        monkeypatch.setattr(pd.DataFrame, "to_parquet", _full)
    else:
        monkeypatch.setattr(os, "replace", _full)
    _fails_cleanly(["compress", run, "--eps", "0.1"], compressed)
    _fails_cleanly(["compress", run, "--eps", "0.2"], compressed)
    assert _snapshot(compressed) == before


def test_save_keeps_the_format_of_its_suffix(tmp_path):
    """The temporary name ends in .tmp: the format still comes from the target's suffix."""
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    assert rb.plots.save(figure, tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert rb.plots.save(figure, tmp_path / "a.PNG").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in rb.plots.save(figure, tmp_path / "a.svg").read_bytes()[:400]
    assert rb.plots.save(figure, tmp_path / "plain") == tmp_path / "plain.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.PNG", "a.pdf", "a.svg", "plain.png"]
