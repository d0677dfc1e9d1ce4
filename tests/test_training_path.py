"""Which path (eager or native) a cohort trains on: the default, the options, resumed runs, the
sweep planner, and how the native library is built where OpenMP is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import rankbias as rb
from rankbias import native
from rankbias.cli import main
from rankbias.data import load_dataset
from rankbias.sweep.plan import plan_sweep
from rankbias.training.engine import CohortTrainer

from .conftest import small_config
from .test_engine import Killed, assert_same_records, kill_in_epoch
from .test_native import needs_native


def _path(results, config) -> str:
    return json.loads((results / config.run_id() / "provenance.json").read_text())["training_path"]


@needs_native
def test_fully_connected_runs_train_natively_by_default_and_others_eagerly(tmp_path, capsys):
    fc = small_config(**{"train.epochs": 1})
    conv = small_config(**{"train.epochs": 1, "model": "convnet-2-8"})
    rb.train([fc, conv], tmp_path / "default", jobs=1, threads=1)
    assert _path(tmp_path / "default", fc) == "native"
    assert _path(tmp_path / "default", conv) == "eager"
    assert "native" not in capsys.readouterr().err  # the convnet's eager path is no news
    rb.train(fc, tmp_path / "eager", native=False, jobs=1, threads=1)
    assert _path(tmp_path / "eager", fc) == "eager"
    rb.train(fc, tmp_path / "asked", native=True, jobs=1, threads=1)
    assert _path(tmp_path / "asked", fc) == "native"
    assert_same_records(tmp_path / "default", tmp_path / "asked", fc.run_id())


@needs_native
def test_the_cli_chooses_the_path(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: mlp-bn-2-16\ndata: {name: digits, train_size: 128, test_size: 32}\ntrain: {epochs: 1, batch_size: 32}\n"
    )
    for flag, path in (("--eager", "eager"), ("--native", "native")):
        out = CliRunner().invoke(
            main, ["run", str(config), "--results", str(tmp_path / flag), "--threads", "1", "--no-progress", flag]
        )
        assert out.exit_code == 0, out.output
        run_id = rb.load_configs(config)[0].run_id()
        assert _path(tmp_path / flag, rb.load_configs(config)[0]) == path
        shown = CliRunner().invoke(main, ["show", str(tmp_path / flag / run_id)])
        assert f"(mlp-bn-2-16, digits; {path} path)" in shown.output.splitlines()[0]


@needs_native
def test_runs_resumed_from_both_paths_train_in_separate_cohorts(tmp_path, monkeypatch):
    """Two runs of one cohort key, one killed on the eager path and one on the native path: the
    planner keeps them apart, each resumes on its own path, and each equals its uninterrupted run."""
    eager = small_config(**{"train.epochs": 4})
    natively = small_config(**{"train.epochs": 4, "train.seed": 5})
    rb.train(eager, tmp_path / "straight", native=False, jobs=1, threads=1)
    rb.train(natively, tmp_path / "straight", native=True, jobs=1, threads=1)
    original = kill_in_epoch(monkeypatch, 3)
    for config, flag in ((eager, False), (natively, True)):
        with pytest.raises(Killed):
            rb.train(config, tmp_path / "killed", native=flag, jobs=1, threads=1)
    monkeypatch.setattr(CohortTrainer, "_train_epoch", original)
    plan = plan_sweep([eager, natively], tmp_path / "killed", {eager.data: load_dataset(eager.data)})
    assert sorted(len(c.configs) for c in plan.cohorts) == [1, 1] and {c.resume_epoch for c in plan.cohorts} == {2}
    runs = rb.train([eager, natively], tmp_path / "killed", jobs=1, threads=1)
    assert [r.state for r in runs] == ["done", "done"]
    for config, path in ((eager, "eager"), (natively, "native")):
        assert _path(tmp_path / "killed", config) == path
        assert_same_records(tmp_path / "straight", tmp_path / "killed", config.run_id())


def _run(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANKBIAS_NATIVE", "CXX")}
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env={**clean, **env}, timeout=300
    )


@needs_native
def test_without_openmp_the_library_builds_single_threaded_once(tmp_path):
    """A compiler that rejects -fopenmp (as Apple's clang does): the library is built without it,
    says so, remembers the failed variants (the next process compiles nothing) and trains."""
    compiler = os.environ.get("CXX") or "g++"
    fake = tmp_path / "no-openmp-g++"
    fake.write_text(
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -fopenmp ] && { echo \"error: unsupported option '-fopenmp'\" >&2;"
        f" exit 1; }}; done\nexec {compiler} \"$@\"\n"
    )
    fake.chmod(0o755)
    code = (
        "import rankbias as rb; from rankbias import native; print(native.available());"
        f"run = rb.train(rb.RunConfig.from_dict({small_config(**{'train.epochs': 1}).to_dict()!r}),"
        f" {str(tmp_path / 'results')!r}, jobs=1, threads=2); print(run.state)"
    )
    env = {"CXX": str(fake), "RANKBIAS_CACHE": str(tmp_path / "cache"), "RANKBIAS_OFFLINE": "1"}
    first = _run(code, **env)
    assert first.stdout.split() == ["True", "done"], first.stderr
    assert "built without OpenMP (error: unsupported option '-fopenmp'): one thread a step" in first.stderr
    assert len(list((tmp_path / "cache" / "native").glob("*.failed"))) == 2
    second = _run("from rankbias import native; print(native.available())", **env)
    assert second.stdout.strip() == "True" and "compiling" not in second.stderr
    assert "without OpenMP" in second.stderr


def test_without_a_compiler_every_run_trains_eagerly_with_one_notice(tmp_path):
    """The issue's fresh machine without g++: two cohorts (two batch sizes) train on the eager
    path; one notice says why."""
    configs = [small_config(**{"train.epochs": 1, "train.batch_size": b}).to_dict() for b in (16, 32)]
    code = (
        "import json, rankbias as rb;"
        f"runs = rb.train([rb.RunConfig.from_dict(c) for c in {configs!r}], {str(tmp_path / 'results')!r},"
        " jobs=1, threads=1);"
        "print([r.state for r in runs], [json.load(open(r.path / 'provenance.json'))['training_path'] for r in runs])"
    )
    no_compiler = {"CXX": str(tmp_path / "no-such-compiler"), "RANKBIAS_CACHE": str(tmp_path / "cache")}
    done = _run(code, **no_compiler, RANKBIAS_OFFLINE="1")
    assert done.stdout.strip() == "['done', 'done'] ['eager', 'eager']", done.stderr
    assert done.stderr.count("native training step unavailable (no C++ compiler") == 1, done.stderr


def test_python_m_rankbias_native_builds_or_says_why_not():
    ready = _run("import runpy; runpy.run_module('rankbias.native', run_name='__main__')")
    off = _run("import runpy; runpy.run_module('rankbias.native', run_name='__main__')", RANKBIAS_NATIVE="0")
    assert off.returncode == 0 and "unavailable (RANKBIAS_NATIVE=0)" in off.stdout
    assert ready.returncode == 0
    assert ("ready" in ready.stdout) == native.available(), ready.stdout
