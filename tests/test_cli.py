"""The command line: run with overrides, show, status, errors; and the demo config's claim."""

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import rankbias as rb
from rankbias.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "model: mlp-bn-2-16\n"
        "data: {name: digits, train_size: 200, test_size: 50}\n"
        "optimizer: {lr: 0.05, weight_decay: 5.0e-3}\n"
        "train: {batch_size: 20, epochs: 2}\n"
    )
    return path


def test_run_with_overrides_then_show_and_status(tmp_path):
    results = tmp_path / "results"
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "run",
            str(write_config(tmp_path)),
            "optimizer.lr=0.02",
            "train.batch_size=8",
            "--results",
            str(results),
            "--no-progress",
        ],
    )
    assert out.exit_code == 0, out.output
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    config = rb.load(run_dir).runs.iloc[0]
    assert config["optimizer.lr"] == 0.02 and config["train.batch_size"] == 8
    assert "avg_rank" in out.output and "hidden.1" in out.output
    shown = runner.invoke(main, ["show", str(run_dir), "--eps", "0.1"])
    assert shown.exit_code == 0 and "done at epoch 2" in shown.output
    assert all(word in shown.output for word in ("epoch", "train_loss", "test_acc", "avg_rank", "hidden.0", "out"))
    status = runner.invoke(main, ["status", str(results)])
    assert status.exit_code == 0 and run_dir.name in status.output
    report = runner.invoke(main, ["report", str(results)])
    assert report.exit_code == 0
    page = (results / "report.html").read_text()
    final_rank = rb.load(results).scalars.sort_values("epoch")["avg_rank"].iloc[-1]
    assert "<table" in page and run_dir.name in page and f"{final_rank:.4g}" in page


def test_python_m_rankbias_is_the_same_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rankbias", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "show" in out.stdout


def test_bad_input_is_one_message_and_stores_nothing(tmp_path):
    results = tmp_path / "results"
    runner = CliRunner()
    out = runner.invoke(main, ["run", str(write_config(tmp_path)), "optimizer.lrr=0.1", "--results", str(results)])
    assert out.exit_code == 2 and "optimizer.lrr: unknown key (did you mean 'lr'?)" in out.output
    assert "Traceback" not in out.output
    out = runner.invoke(main, ["run", str(write_config(tmp_path)), "data.name=mnist", "--results", str(results)])
    assert out.exit_code == 2 and "mnist" in out.output and "Traceback" not in out.output
    assert not results.exists()


def test_demo_config_shows_the_batch_size_effect(tmp_path):
    """The demo's claim: at weight decay 5e-3, batch 8 ends with a lower average rank than 128."""
    configs = rb.load_configs(ROOT / "examples" / "demo.yaml")
    runs = rb.train(configs, tmp_path)
    assert all(r.state == "done" for r in runs)
    last = rb.load(tmp_path).scalars.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    rank = {(c.train.batch_size, c.optimizer.weight_decay): last.at[c.run_id(), "avg_rank"] for c in configs}
    assert rank[(8, 5e-3)] < rank[(128, 5e-3)] - 5
    assert rank[(8, 5e-3)] < rank[(8, 0.0)] - 5  # and weight decay is what does it


def test_status_of_runs_that_never_recorded(tmp_path):
    """A run that failed before its first record has a config and a status but no records."""
    import json

    from .conftest import small_config

    config = small_config()
    run_dir = tmp_path / "results" / config.run_id()
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    (run_dir / "status.json").write_text(
        json.dumps({"state": "failed", "epoch": None, "message": "RuntimeError: boom"})
    )
    out = CliRunner().invoke(main, ["status", str(tmp_path / "results")])
    assert out.exit_code == 0, out.output
    assert "failed: 1" in out.output and "boom" in out.output and config.run_id() in out.output


def test_training_processes_and_the_cli_start_without_matplotlib():
    # every worker process and every CLI call imports these; the figures (matplotlib) load on first use
    code = (
        "import sys, rankbias as rb, rankbias.cli, rankbias.sweep.worker\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start'\n"
        "assert callable(rb.plots.rank_vs_epoch) and callable(rb.theory.lemma_3_2) and 'plots' in dir(rb)\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
