"""Bad input a new user may type: one message naming the file, key or option, exit status 2, no
traceback, nothing stored touched."""

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main

from .conftest import small_config


def fails_cleanly(args, *words):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no exception escaped
    for word in words:
        assert word in result.output, result.output
    return result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(128, 256)) * 8, "is not a text file"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"a: {" * 3000 + b"}" * 3000, "nested too deeply"),
        (b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n', "aliases (*name) are not read in configs"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
    ],
)
def test_a_config_file_that_is_not_a_config(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    fails_cleanly(["run", path, "--results", tmp_path / "results"], str(path), message)
    assert not (tmp_path / "results").exists()


def test_a_directory_given_as_config(tmp_path):
    fails_cleanly(["run", tmp_path, "--results", tmp_path / "results"], "is a directory")
    fails_cleanly(["theory", "--gradient-rank", tmp_path], "is a directory")


def test_one_rule_for_eps_on_every_command(tmp_path):
    results = tmp_path / "results"
    run = rb.train(small_config(**{"train.epochs": 1}), results)
    commands = [
        ["show", run.path],
        ["status", results],
        ["report", results],
        ["plot", results, "rank-vs-epoch"],
        ["compress", run.path],
        ["theory", run.path, "--records-only"],
    ]
    for bad in ("0", "-1", "1", "1.5", "5"):
        for command in commands:
            fails_cleanly([*command, "--eps", bad], "--eps")
    assert not (results / "report.html").exists() and not (run.path / "compress").exists()
    with pytest.raises(rb.ConfigError, match="eps: must be in"):
        rb.load(run.path, eps=0.0)


def test_show_of_a_folder_of_runs_says_to_pick_one(tmp_path):
    runs = rb.train([small_config(**{"train.epochs": 1, "train.seed": s}) for s in (0, 1)], tmp_path / "results")
    output = fails_cleanly(["show", tmp_path / "results"], "holds 2 runs, not one", "rankbias status")
    assert any(r.run_id in output for r in runs)


def test_compress_bounds(tmp_path):
    run = rb.train(small_config(**{"train.epochs": 1}), tmp_path / "results")
    fails_cleanly(["compress", run.path, "--max-drop", "-5"], "--max-drop")
    fails_cleanly(["compress", run.path, "--sweep-eps", "1e-4:1e-1:100000"], "COUNT <= 1000")
    assert not (run.path / "compress").exists()


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"rankbias {rb.__version__}"


def test_a_crop_larger_than_the_image_is_refused(tmp_path):
    config = small_config(**{"augment.crop": 1000})  # digits: 8×8 images
    with pytest.raises(rb.ConfigError, match=r"augment.crop: 1000 is not smaller than the images' side \(8\)"):
        rb.train(config, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    assert rb.train(small_config(**{"augment.crop": 2, "train.epochs": 1}), tmp_path / "ok").state == "done"


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    run = rb.train(small_config(**{"train.epochs": 1}), root / "results")
    (root / "a-file").write_text("not a folder")
    return root, run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plot", "{results}", "rank-vs-epoch", "--out", "{root}/f.xyz"], "--out: {root}/f.xyz: give a file ending"),
        (["plot", "{results}", "rank-vs-epoch", "--out", "{root}/a-file/f.pdf"], "{root}/a-file is a file, not a"),
        (["plot", "{results}", "rank-vs-epoch", "--out", "{results}"], "give a file ending in .pdf, .png, .svg"),
        (["compress", "{run}", "--sweep-eps", "1e-3:1e-1:3", "--out", "{root}/x.xyz"], "--out: {root}/x.xyz: give"),
        (["compress", "{run}", "--sweep-eps", "1e-3:1e-1:3", "--out", "{root}/a-file/x.png"], "is a file, not a"),
        (["export", "{results}", "{root}/a-file"], "out: {root}/a-file is a file; give a folder"),
        (["export", "{results}", "{root}/a-file/sub"], "{root}/a-file is a file, not a"),
        (["report", "{results}", "--out", "{root}/a-file"], "--out: {root}/a-file is a file; give a folder"),
        (["report", "{results}", "--out", "{root}/a-file/page.html"], "is a file, not a folder"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_message_before_any_work(one_run, args, message):
    root, run = one_run
    where = {"root": root, "results": root / "results", "run": run.path}
    fails_cleanly([a.format(**where) for a in args], message.format(**where))
    assert not (run.path / "compress").exists() and not list(root.glob("**/*.xyz"))


def test_theory_of_a_folder_says_which_checks_it_left_out(one_run):
    root, run = one_run
    out = CliRunner().invoke(main, ["theory", str(root / "results")])
    assert out.exit_code == 0, out.output
    assert "left out: the checks that load each network" in out.output and "run on one run at a time" in out.output
    alone = CliRunner().invoke(main, ["theory", str(run.path)]).output
    assert "left out" not in alone and "gsgp_lemma_3_1" in alone


def test_saving_a_figure_where_it_cannot_be_written(tmp_path):
    import matplotlib.pyplot as plt

    figure = plt.figure()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(rb.ConfigError, match="cannot write .xyz files"):
        rb.plots.save(figure, tmp_path / "f.xyz")
    with pytest.raises(rb.ConfigError, match="a-file is a file, not a folder"):
        rb.plots.save(figure, tmp_path / "a-file" / "f.png")
    assert rb.plots.save(figure, tmp_path / "f").suffix == ".png"  # no suffix: matplotlib's default format
    plt.close(figure)


def test_a_sweep_too_large_to_plan_is_refused_before_expanding(tmp_path):
    from rankbias.config import MAX_RUNS

    path = tmp_path / "huge.yaml"
    values = list(range(40))
    path.write_text(f"sweep:\n  train.seed: {values}\n  optimizer.lr: {[0.01 * (i + 1) for i in range(40)]}\n"
                    f"  train.batch_size: {[i + 1 for i in range(40)]}\n")  # fmt: skip
    assert 40**3 > MAX_RUNS
    message = "sweep: expands to 64,000 runs (40 × 40 × 40)"
    fails_cleanly(["run", path, "--dry-run", "--results", tmp_path / "r"], message)


def test_an_empty_query_is_one_message(one_run):
    root, _ = one_run
    fails_cleanly(["query", root / "results", ""], "no SQL statement")
    fails_cleanly(["query", root / "results", "   ;  "], "no SQL statement")
