"""The ``rankbias`` command. Thin: every command calls the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pandas as pd

from . import api
from .config import load_configs
from .errors import RankbiasError
from .report import write_report
from .summary import epoch_table, final_summary


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _print(table: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """rankbias: train with SGD + weight decay, record every weight matrix's spectrum."""


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--results", default="results", show_default=True, type=click.Path(path_type=Path), help="Results directory.")
@click.option("--force", is_flag=True, help="Retrain runs whose results are already stored.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default $RANKBIAS_DATA or ./data).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar per cohort.")
def run(config, overrides, results, force, device, data_dir, progress) -> None:
    """Train the run(s) of CONFIG (a YAML file, optionally with a sweep block).

    OVERRIDES are dotted.key=value pairs, e.g. optimizer.lr=0.05 train.batch_size=8.
    """
    try:
        configs = load_configs(config, list(overrides))
        click.echo(f"{len(configs)} run(s) -> {results}/", err=True)
        outcome = api.train(configs, results, force=force, device=device, data_root=data_dir, progress=progress)
    except RankbiasError as exc:
        _fail(exc)
    reused = sum(r.reused for r in outcome)
    if reused:
        click.echo(f"{reused} run(s) reused from earlier results (use --force to retrain)", err=True)
    records = api.load(results)
    if len(outcome) == 1:
        click.echo(f"run {outcome[0].run_id}: {outcome[0].state} ({outcome[0].path})")
        _print(epoch_table(records, outcome[0].run_id))
    else:
        _print(final_summary(records, [r.run_id for r in outcome]))
    failed = [r for r in outcome if r.state == "failed"]
    for r in failed:
        click.echo(f"run {r.run_id} failed: {r.message}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--eps", type=float, help="Rank threshold (default: the run's record.eps).")
@click.option("--norm", type=click.Choice(["fro", "spectral"]), help="Normalization for the rank.")
def show(run_dir, eps, norm) -> None:
    """Print a run's table: epoch, losses, accuracies, average rank, per-layer ranks."""
    try:
        records = api.load(run_dir, eps=eps, norm=norm)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    row = records.runs.iloc[0]
    click.echo(f"run {row['run_id']}: {row['state']} at epoch {row['state_epoch']}  ({row['model.name']}, {row['data.name']})")
    if row["message"]:
        click.echo(f"  {row['message']}")
    _print(epoch_table(records, row["run_id"]))


@main.command()
@click.argument("results", default="results", type=click.Path(path_type=Path))
@click.option("--eps", type=float, help="Rank threshold (default: each run's record.eps).")
def status(results, eps) -> None:
    """List the runs under RESULTS: settings that differ, state, last record."""
    try:
        records = api.load(results, eps=eps)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    _print(final_summary(records))


@main.command()
@click.argument("results", default="results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file (default RESULTS/report.html).")
@click.option("--eps", type=float, help="Rank threshold (default: each run's record.eps).")
def report(results, out, eps) -> None:
    """Write a self-contained HTML page: final records, average rank and accuracy per epoch."""
    try:
        path = write_report(results, out, eps)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    click.echo(f"report written to {path}")
