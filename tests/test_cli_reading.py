"""Commands that only read records: they start fast (no torch), find runs in subfolders and say
which folders they read, and print tables that fit a terminal."""

import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main
from rankbias.store.records import MAX_LAYER_COLUMNS, epoch_table

from .conftest import small_config


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """results/ with one run of its own and two in results/demo/ (one of them also at the top)."""
    root = tmp_path_factory.mktemp("nested") / "results"
    a, b = small_config(**{"train.epochs": 2}), small_config(**{"train.epochs": 2, "train.batch_size": 8})
    rb.train([a], root)
    rb.train([a, b], root / "demo")
    return root, a.run_id(), b.run_id()


READERS = [
    ["--help"],
    ["--version"],
    ["status", "{results}"],
    ["show", "{run}"],
    ["query", "{results}", "select count(*) from runs"],
    ["export", "{results}", "{out}"],
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_reading_commands_do_not_import_torch(args, nested, tmp_path):
    root, first, _ = nested
    args = [a.format(results=root, run=root / first, out=tmp_path / "out") for a in args]
    code = (
        "import sys\nfrom rankbias.cli import main\n"
        f"sys.argv = ['rankbias', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_python_api_names_resolve_on_use():
    # lazily imported, and a submodule import does not hide the function of the same name
    import rankbias.compress
    import rankbias.query
    import rankbias.spectra  # noqa: F401

    assert callable(rb.query) and callable(rb.compress) and callable(rb.spectra) and callable(rb.train)
    assert rb.query.__module__ == "rankbias.query" and rb.spectra.__module__ == "rankbias.api"
    assert {"train", "load", "query", "plots"} <= set(dir(rb))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rb.nothing  # noqa: B018


def test_status_and_query_find_runs_in_subfolders_and_say_where(nested):
    root, first, second = nested
    runner = CliRunner()
    status = runner.invoke(main, ["status", str(root)])
    assert status.exit_code == 0, status.output
    assert "done: 2" in status.output and first in status.output and second in status.output
    # the run found twice (top and demo/) is read once, from the nearer folder; the note says where
    assert f"read 2 runs: 1 in {root}/, 1 in {root / 'demo'}/" in status.stderr
    assert rb.load(root).runs["run_id"].tolist() == [first, second]
    query = runner.invoke(main, ["query", str(root), "select count(*) as n from runs"])
    assert query.exit_code == 0 and query.stdout.split()[-1] == "2"
    only_demo = runner.invoke(main, ["status", str(root / "demo")])
    assert "read " not in only_demo.stderr  # all its runs are directly under it: nothing to say


def test_no_runs_anywhere_is_one_message(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    out = CliRunner().invoke(main, ["status", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "no rankbias runs under" in out.stderr and "Traceback" not in out.output


def test_top_level_help_lists_every_command_untruncated():
    out = CliRunner().invoke(main, ["--help"]).output
    commands = out.split("Commands:")[1].strip().splitlines()
    assert len(commands) == len(main.commands) and not any(line.rstrip().endswith("...") for line in commands)
    assert [line.split()[0] for line in commands][:3] == ["run", "status", "show"]


def test_wide_runs_get_a_compact_table_and_uncounted_matrices_are_marked(tmp_path):
    vit = small_config(**{"model.name": "vit", "model.width": 16, "model.mlp_dim": 16, "train.epochs": 1})
    mlp = small_config(**{"train.epochs": 1})
    rb.train([vit, mlp], tmp_path)
    records = rb.load(tmp_path)
    layers = records.layers[records.layers["run_id"] == vit.run_id()]["layer"].nunique()
    assert layers > MAX_LAYER_COLUMNS
    compact = epoch_table(records, vit.run_id())
    assert list(compact.columns[-3:]) == ["min_rank", "median_rank", "max_rank"]
    counted = records.layers[(records.layers["run_id"] == vit.run_id()) & records.layers["counted"]]
    assert compact["max_rank"].iloc[-1] == counted.groupby("epoch")["eps_rank"].max().iloc[-1]
    assert len(epoch_table(records, vit.run_id(), layers=True).columns) == 7 + layers
    shown = CliRunner().invoke(main, ["show", str(tmp_path / mlp.run_id())])
    assert "out*" in shown.output and "hidden.0*" not in shown.output and "*: not in avg_rank" in shown.output
    assert max(map(len, CliRunner().invoke(main, ["show", str(tmp_path / vit.run_id())]).output.splitlines())) < 160


def test_show_of_a_moved_results_folder(nested, tmp_path):
    # a copied folder of runs reads the same: no absolute path is stored
    root, first, _ = nested
    shutil.copytree(root, tmp_path / "copy")
    out = CliRunner().invoke(main, ["show", str(tmp_path / "copy" / first)])
    assert out.exit_code == 0 and f"run {first}: done" in out.output
