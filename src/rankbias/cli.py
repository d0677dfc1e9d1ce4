"""The ``rankbias`` command. Thin: every command calls the Python API."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .config import NORMS, RunConfig, flatten, load_configs
from .conventions import SCALES
from .errors import ConfigError, DamagedError, DamagedRunWarning, PlotError, RankbiasError, SchemaError
from .options import EXECUTORS
from .store.io import FIGURE_SUFFIXES, check_output
from .store.run_store import RunStore, is_run, starting_runs
from .store.schema import FORMATS

if TYPE_CHECKING:  # pandas, torch and matplotlib are imported by the commands that use them: help is instant
    import pandas as pd


class Commands(click.Group):
    """The command group. Every :class:`~rankbias.errors.RankbiasError` a command raises (bad
    input, data, records or results directory) is printed here, as one line, with exit status 2."""

    ORDER = ("run", "status", "show", "report", "plot", "query", "export", "theory", "compress", "reproduce")

    def list_commands(self, ctx: click.Context) -> list[str]:
        """In the order of work (train, look, analyse), not alphabetical; any other command last."""
        names = super().list_commands(ctx)
        return [n for n in self.ORDER if n in names] + [n for n in names if n not in self.ORDER]

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedRunWarning)
            try:
                return super().invoke(ctx)
            except RankbiasError as exc:
                click.echo(f"error: {exc}", err=True)
                ctx.exit(2)
            finally:
                _show(caught)


# the one rule for a rank threshold on every command, as record.eps declares it: 0 < ε < 1
EPS = click.FloatRange(0, 1, min_open=True, max_open=True)


def _print(table: pd.DataFrame) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _print_epochs(records, run_id: str, layers: bool | None = None) -> None:
    """One run's table (``records.epoch_table``), with a line saying what its rank columns are."""
    from .store.records import epoch_table, epoch_table_note

    table = epoch_table(records, run_id, layers)
    _print(table)
    if note := epoch_table_note(table):
        click.echo(note)


def _say_folders(path: Path) -> None:
    """When the runs of ``path`` are in its subfolders too, say which folders were read (stderr)."""
    from .store.catalog import candidate_dirs, folders_note

    try:
        note = folders_note(path, candidate_dirs(path))
    except RankbiasError:  # no runs: the command itself says so
        return
    if note:
        click.echo(note, err=True)


def _show(caught: list[warnings.WarningMessage]) -> None:
    """Damaged runs left out, once each as ``warning: ...``; other warnings as Python shows them."""
    seen = set()
    for w in caught:
        if issubclass(w.category, DamagedRunWarning):
            if str(w.message) not in seen:
                click.echo(f"warning: {w.message}", err=True)
            seen.add(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="rankbias", message="%(prog)s %(version)s")
def main() -> None:
    """rankbias: train with SGD + weight decay, record every weight matrix's spectrum."""


@main.command(short_help="Train the runs of a config file (a sweep as cohorts).")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option(
    "--results", default="results", show_default=True, type=click.Path(path_type=Path), help="Results directory."
)
@click.option("--force", is_flag=True, help="Retrain runs whose results are already stored.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default $RANKBIAS_DATA or ./data).")
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show the sweep's progress (a bar on a terminal, log lines otherwise).",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Torch threads of each training process, this one included (default 1: see docs/sweeps.md).",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="Worker processes on this machine, or Ray tasks.",
)
@click.option("--address", help="Ray cluster address (default $RAY_ADDRESS, else a local Ray).")
@click.option(
    "--max-cohort",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most runs trained together as one model.",
)
@click.option(
    "--memory-cap",
    type=click.FloatRange(min=0, min_open=True),
    help="MiB one cohort may use (default: free GPU memory, or half the RAM shared by the workers).",
)
@click.option("--dry-run", is_flag=True, help="Print the runs and their cohorts; train nothing.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed cohort.")
@click.option(
    "--tf32",
    is_flag=True,
    help="On a GPU, let float32 matrix products use TensorFloat-32 (faster; small singular values become noise).",
)
@click.option(
    "--native/--eager",
    default=None,
    help="On a CPU, train the fully connected families with the native step (C++, built at first use) "
    "or eagerly (PyTorch). Default: native wherever it can run (the faster path; docs/speed.md).",
)
@click.option(
    "--log-to",
    "log_to",
    multiple=True,
    metavar="TOOL:DEST",
    help="Also send each run's records, when its cohort ends, to tensorboard:DIR, wandb:DIR or mlflow:DIR|URI "
    "(repeatable; docs/track.md).",
)
def run(
    config,
    overrides,
    results,
    force,
    device,
    data_dir,
    progress,
    jobs,
    threads,
    executor,
    address,
    max_cohort,
    memory_cap,
    dry_run,
    fail_fast,
    tf32,
    native,
    log_to,
) -> None:
    """Train the run(s) of CONFIG (a YAML file, optionally with a sweep block).

    OVERRIDES are dotted.key=value pairs, e.g. optimizer.lr=0.05 train.batch_size=8.
    """
    from . import api
    from .options import EngineOptions, SweepOptions
    from .store.records import final_summary, load
    from .sweep import default_jobs, plan_table

    cap = None if memory_cap is None else int(memory_cap * 2**20)
    engine = EngineOptions(device=device, tf32=tf32, progress=progress, threads=threads, native=native)
    sinks = []
    for item in log_to:
        tool, sep, destination = item.partition(":")
        if not sep or not destination:
            raise ConfigError("--log-to", f"takes TOOL:DEST, e.g. tensorboard:tb/, got {item!r}")
        sinks.append((tool, destination))
    sweep = SweepOptions(jobs or default_jobs(), executor, address, max_cohort, cap, fail_fast, tuple(sinks))
    configs = load_configs(config, list(overrides))
    if dry_run:
        plan = api.plan(configs, results, force=force, data_root=data_dir, engine=engine, sweep=sweep)
        click.echo(
            f"{len(configs)} run(s): {plan.pending} to train in {len(plan.cohorts)} cohort(s), {len(plan.finished)} "
            f"already finished; memory cap {plan.memory_cap / 2**20:.0f} MiB per cohort"
        )
        _print(plan_table(plan, configs, results))
        return
    click.echo(f"{len(configs)} run(s) -> {results}/", err=True)
    outcome = api.train(configs, results, force=force, data_root=data_dir, engine=engine, sweep=sweep)
    reused = sum(r.reused for r in outcome)
    if reused:
        click.echo(f"{reused} run(s) reused from earlier results (use --force to retrain)", err=True)
    records = load(results)
    if len(outcome) == 1:
        click.echo(f"run {outcome[0].run_id}: {outcome[0].state} ({outcome[0].path})")
        _print_epochs(records, outcome[0].run_id)
    else:
        _print(final_summary(records, [r.run_id for r in outcome]))
    failed = [r for r in outcome if r.state == "failed"]
    for r in failed:
        click.echo(f"run {r.run_id} failed: {r.message}", err=True)
    if failed:
        sys.exit(1)


@main.command(short_help="One run's records, epoch by epoch.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--eps", type=EPS, help="Rank threshold (default: the run's record.eps).")
@click.option("--norm", type=click.Choice(NORMS), help="Normalization for the rank.")
@click.option("--layers/--no-layers", default=None,
              help="One rank column per weight matrix (default: when there are at most 12; else min/median/max).")
def show(run_dir, eps, norm, layers) -> None:
    """Print a run's table: epoch, losses, accuracies, average rank, per-layer ranks."""
    from .store.records import load

    if not is_run(run_dir):
        from .store.catalog import candidate_dirs

        runs = candidate_dirs(run_dir)  # a folder of runs: say so, and how to pick one
        raise ConfigError("RUN_DIR", f"{run_dir} holds {len(runs)} runs, not one: rankbias show {runs[0]} "
                          f"shows one; rankbias status {run_dir} lists them all")  # fmt: skip
    records = load(run_dir, eps=eps, norm=norm)
    row = records.runs.iloc[0]
    try:  # read as text: store.provenance imports torch
        path = json.loads((run_dir / "provenance.json").read_text()).get("training_path")
    except (OSError, ValueError, AttributeError):  # a missing or damaged provenance only loses this note
        path = None
    click.echo(
        f"run {row['run_id']}: {row['state']} at epoch {row['state_epoch']}  "
        f"({row['model.name']}, {row['data.name']}{f'; {path} path' if path else ''})"
    )
    if row["message"]:
        click.echo(f"  {row['message']}")
    _print_epochs(records, row["run_id"], layers)


@main.command(short_help="Every run under a folder: state, settings, last record.")
@click.argument("results", default="results", type=click.Path(path_type=Path))
@click.option("--eps", type=EPS, help="Rank threshold (default: each run's record.eps).")
def status(results, eps) -> None:
    """Count the runs under RESULTS (done, running, pending, diverged, failed, damaged: each
    failed or damaged one with the reason), then list them: settings that differ, state, last record."""
    import pandas as pd

    from .store.catalog import candidate_dirs
    from .store.integrity import scan
    from .store.records import final_summary, load
    from .store.status import sweep_status

    _say_folders(results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedRunWarning)  # listed below, each with its problem
        try:
            records = load(results, eps=eps)
        except (DamagedError, SchemaError):  # every run damaged
            records = None
    if records is None:
        damaged = [(d.name, str(e)) for d, e in scan(candidate_dirs(results)).damaged.items()]
        runs = pd.DataFrame(columns=["run_id", "state"])
    else:
        damaged, runs = list(records.damaged.itertuples(index=False, name=None)), records.runs
    counts, failures = sweep_status(runs, starting=starting_runs(results), damaged=len(damaged))
    click.echo("  ".join(f"{state}: {n}" for state, n in counts.items()))
    for run_id, message in failures:
        click.echo(f"failed {run_id}: {message}")
    for run_id, problem in damaged:
        click.echo(f"damaged {run_id}: {problem}")
    if records is not None:
        _print(final_summary(records))


@main.command(short_help="The model families, their papers and options.")
def models() -> None:
    """List the model families: name pattern, what it is, its paper, its model.* options."""
    from .models import list_models

    for family in list_models():
        options = ", ".join(f"{k}={v}" for k, v in family["options"].items()) or "none"
        click.echo(f"{family['pattern']:<12} {family['description']}")
        not_counted = ", ".join(family["not counted"])
        click.echo(f"{'':<12} paper: {family['paper']}; options: {options}; not counted: {not_counted}")


@main.command(short_help="An HTML page of runs: tables, figures, theory checks.")
@click.argument("results", default="results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="A .html file, or a directory: DIR/report.html + DIR/figures/*.png, *.pdf (default RESULTS/report.html).",
)
@click.option("--eps", type=EPS, help="Rank threshold (default: each run's record.eps).")
@click.option("--norm", type=click.Choice(NORMS), help="Normalization for the rank (default: each run's record.norm).")
def report(results, out, eps, norm) -> None:
    """Write one self-contained HTML page: configuration, run table, figures, problems, provenance.

    The figures are chosen from what varied (docs/report.md); ranks at --eps/--norm are
    recomputed from the stored singular values.
    """
    from .report import write_report  # matplotlib: imported by the commands that draw

    if out is not None:
        html = out.suffix.lower() in (".html", ".htm")
        check_output(out, "--out", (".html", ".htm") if html else (), folder=not html)
    _say_folders(results)
    path = write_report(results, out, eps, norm)
    click.echo(f"report written to {path}")


@main.command("compress", short_help="Factorize trained layers at their ε-ranks.")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--eps", type=EPS, help="Rank threshold (default: each run's record.eps).")
@click.option("--sweep-eps", metavar="LOW:HIGH:N", help="N log-spaced thresholds, LOW to HIGH (1e-4:1e-1:13).")
@click.option("--norm", type=click.Choice(NORMS), help="Rank normalization (default: each run's).")
@click.option("--by", metavar="KEY", help="Figure: one curve per value of this setting (e.g. train.batch_size).")
@click.option("--max-drop", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Test accuracy that may be lost when picking each run's smallest network.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Figure file: .pdf, .png or .svg (default PATH/compress/compress.png for a run, "
                   "PATH/compress.png for many).")
@click.option("--device", default="cpu", show_default=True, help="Where to evaluate: cpu, cuda, auto ...")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default $RANKBIAS_DATA, ./data).")
def compress_command(path, eps, sweep_eps, norm, by, max_drop, out, device, data_dir) -> None:
    """Factorize a trained run's layers at their ε-ranks: parameters, FLOPs, accuracy before/after.

    PATH is a run directory or a results directory (every run). Results are stored in each run's
    compress/ folder; with several rows (an ε sweep or several runs) a figure is written too.
    """
    from .compress.figure import compression_figure
    from .compress.runs import compress_run, figure_path, layer_table, smallest_table, summary_table
    from .plots.style import save

    if out is not None:
        check_output(out, "--out", FIGURE_SUFFIXES)
    if by is not None and by not in flatten(RunConfig().to_dict()):
        raise ConfigError("--by", f"{by!r} is not a config key (such as train.batch_size or optimizer.weight_decay)")
    _say_folders(path)
    table = compress_run(path, eps, norm, sweep_eps=sweep_eps, device=device, data_root=data_dir, progress=True)
    if len(table) == 1:  # one run, one ε: what happened to each layer
        _print(layer_table(path, table.iloc[0]))
        click.echo("")
    _print(summary_table(table))
    if table["run_id"].nunique() > 1:
        click.echo(f"\nsmallest network per run with test accuracy within {max_drop:g} of the uncompressed one:")
        _print(smallest_table(table, max_drop))
    if len(table) > 1:
        click.echo(f"figure written to {save(compression_figure(table, by), out or figure_path(path))}")


@main.command(short_help="The papers' lemmas and bounds, checked on runs.")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--gradient-rank",
    "gradient_source",
    type=click.Path(exists=True, path_type=Path),
    help="Only the per-sample gradient ranks, of a config's network at initialization (YAML) or of a stored run.",
)
@click.option("--samples", default=32, show_default=True, help="Training samples for the gradient ranks.")
@click.option(
    "--eps",
    "eps",
    multiple=True,
    type=EPS,
    help="ε values of GSGP Thm 3.3 (repeatable; default rankbias.theory.THEOREM_3_3_EPS: 1e-3 1e-2 0.1 0.3 0.5).",
)
@click.option(
    "--steps",
    "steps",
    multiple=True,
    type=int,
    help="n of GSGP Lemma 3.2, in steps (repeatable; default all recorded).",
)
@click.option(
    "--batches",
    default=16,
    show_default=True,
    help="Random batches for GP Thm 1 and CHEN's batch-gradient norms.",
)
@click.option("--records-only", is_flag=True, help="Skip the checks that load the network and compute gradients.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where gradients are computed: cpu, cuda, cuda:1 ... or auto.",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default $RANKBIAS_DATA or ./data).")
def theory(path, gradient_source, samples, eps, steps, batches, records_only, device, data_dir) -> None:
    """The papers' lemmas and bounds checked on PATH (a run, or a results directory of runs).

    Prints each check's measured value, bound, whether it holds and why it fails or is trivial
    (docs/theory.md); for a results directory, also GSGP Prediction 4.1: per knob, a trend test's
    verdict, effect (% of the full rank) with its interval and p-value. Exits with status 1 when a
    check that is an identity (GSGP Lemmas 3.1 and 3.2, GP Lemma 2 and Theorem 1) is violated.
    """
    import pandas as pd

    from . import theory as th
    from .store.records import load

    if (path is None) == (gradient_source is None):
        raise ConfigError("", "give a run or results directory, or --gradient-rank CONFIG_OR_RUN (one of the two)")
    if gradient_source is not None:
        table = th.gradient_rank_at(gradient_source, samples, data_root=data_dir, device=device)
    else:
        _say_folders(path)
        table = th.check_run(
            path,
            eps=eps or th.THEOREM_3_3_EPS,
            n=list(steps) or None,
            samples=samples,
            batches=batches,
            data_root=data_dir,
            models=not records_only,
            device=device,
        )
    columns = [c for c in th.COLUMNS if c != "run_id" or table["run_id"].nunique() > 1]
    _print(table[columns])
    tracked = path is not None and is_run(path) and RunStore.at(path).is_tracked()
    if path is not None and (records_only or tracked or not is_run(path)):
        why = (
            "skipped by --records-only" if records_only
            else "a run recorded by rb.Tracker stores no network: call them on your model, rb.theory.gradient_rank"
            if tracked else f"run on one run at a time: rankbias theory {path}/<run_id>"
        )  # fmt: skip
        click.echo(
            "\nleft out: the checks that load each network and compute its gradients (per-sample gradient ranks, "
            f"GSGP Lemma 3.1 / GP Lemmas 1-2; GP Theorem 1; CHEN Theorem 2.6), {why}"
        )
    if path is not None and not is_run(path):
        tests = th.prediction_4_1(load(path)).tests
        if len(tests):
            click.echo("\nGSGP Prediction 4.1:")
            shown = ["symbol", "verdict", "effect", "ci_low", "ci_high", "p", "control_effect", "why"]
            with pd.option_context("display.max_colwidth", None):
                _print(tests[[c for c in shown if c in tests.columns]])
    violated = table[table["check"].isin(th.IDENTITIES) & table["holds"].eq(False)]
    if len(violated):
        click.echo(
            f"\n{len(violated)} violation(s) of identity-based bounds: a bug in the records or the engine", err=True
        )
        sys.exit(1)


def _plot_help() -> str:
    from .plots import FIGURES

    lines = [f"  {name:<22} {f.number}: {f.help}" for name, f in FIGURES.items() if f.table is None]
    return (
        "Draw one figure family of RESULTS and save it to --out (.pdf vector, .png, .svg).\n\n"
        "Roles take a config key, its paper symbol (B, μ, λ) or its last part (batch_size);\n"
        "left out, they take the keys that vary. docs/report.md describes each family.\n\n"
        "\b\nFAMILY is one of:\n" + "\n".join(lines)
    )


class _PlotCommand(click.Command):
    """Its help lists the figure families, built when asked for: the figures import matplotlib,
    which no other command needs at start."""

    def format_help(self, ctx, formatter):
        self.help = _plot_help()
        super().format_help(ctx, formatter)


@main.command(cls=_PlotCommand, short_help="One figure family of runs, saved as PDF, PNG or SVG.")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("family")
@click.option("--vary", help="One line per value of this key.")
@click.option("--panel", help="One panel per value of this key.")
@click.option("--x", "x", help="heatmap: the key along x.")
@click.option("--y", "y", help="heatmap: the key along y.")
@click.option("--where", multiple=True, metavar="KEY=VALUE", help="Only runs with this value (repeatable).")
@click.option("--run", "runs", multiple=True, help="Only this run id or id prefix (repeatable).")
@click.option("--layer", help="The weight matrix (layer-spectra, rank-vs-eps, spectra-over-training, weight-decay).")
@click.option("--epoch", type=int, help="The record to show (default: each run's last).")
@click.option("--eps", type=EPS, help="Rank threshold (default: each run's record.eps).")
@click.option("--norm", type=click.Choice(NORMS), help="Normalization for the rank (default: each run's).")
@click.option("--out", type=click.Path(path_type=Path), help="Figure file: .pdf, .png or .svg (default FAMILY.pdf).")
def plot(results, family, vary, panel, x, y, where, runs, layer, epoch, eps, norm, out) -> None:
    import inspect

    import yaml

    from .plots import results_figure, save

    function = results_figure(family)
    out = check_output(out or Path(f"{family}.pdf"), "--out", FIGURE_SUFFIXES)
    parameters = inspect.signature(function).parameters
    given = {
        "vary": vary,
        "panel": panel,
        "x": x,
        "y": y,
        "runs": list(runs) or None,
        "epoch": epoch,
        "eps": eps,
        "norm": norm,
    }
    given["layers" if "layers" in parameters else "layer"] = [layer] if layer and "layers" in parameters else layer
    option = {"runs": "--run", "layers": "--layer"}
    accepted = [k for k in parameters if k in given or k in option or k == "layer"]
    wrong = [k for k, v in given.items() if v is not None and k not in accepted]
    if wrong:
        takes = ", ".join(option.get(k, f"--{k}") for k in accepted)
        flag = option.get(wrong[0], "--" + wrong[0])
        raise PlotError(f"{flag} does not apply to {family}; it takes {takes}, --where")
    given = {k: v for k, v in given.items() if v is not None}
    chosen = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--where", f"takes KEY=VALUE, got {item!r}")
        chosen[key] = yaml.safe_load(value)
    _say_folders(results)
    path = save(function(results, where=chosen or None, **given), out)
    click.echo(f"figure written to {path}")


@main.command("query", short_help="SQL over the records of runs (DuckDB).")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("sql")
def query_command(results, sql) -> None:
    """Run SQL over the runs under RESULTS and print the table.

    Views: runs (one row per run, config keys as columns: quote them, "train.batch_size"),
    scalars, layers, spectra, final (each run's last record with its config). Example:

    rankbias query results/ 'select "train.batch_size", avg(avg_rank) from final group by 1 order by 1'
    """
    from .query import query

    _say_folders(results)
    _print(query(results, sql))


@main.command("export", short_help="Records as CSV/Parquet, or to TensorBoard, W&B, MLflow.")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path())  # a str: an MLflow tracking URI (sqlite:///...) stays whole
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="The tables' file format  [default: csv]")
@click.option(
    "--to",
    type=click.Choice(("tensorboard", "wandb", "mlflow")),  # rankbias.sinks.SINKS (tests/test_sinks.py)
    help="Instead of tables: one run of this tool per run, OUT being its log dir / offline dir / MLflow store.",
)
def export_command(results, out, fmt, to) -> None:
    """Write the views of the runs under RESULTS (runs, scalars, layers, spectra, final) to OUT/<view>.<format>,
    or, with --to, every run into TensorBoard, W&B or MLflow (docs/track.md), replacing each run's earlier copy."""
    if to is not None and fmt is not None:
        raise ConfigError("--to", "writes runs of TensorBoard / W&B / MLflow, not tables: give --to or --format")
    _say_folders(results)
    if to is not None:
        from .sinks import HINTS, export_to

        for where in export_to(results, out, to):
            click.echo(where)
        click.echo(HINTS[to].format(out=out), err=True)
        return
    from .query import export

    for path in export(results, out, fmt or "csv"):
        click.echo(str(path))


@main.command("reproduce", short_help="The papers' figures: train, draw, check each claim.")
@click.option(
    "--list",
    "list_",
    is_flag=True,
    help="List the presets: id, paper figure, the model and data that train at --scale, what varies, "
    "runs × epochs per scale.",
)
@click.option(
    "--scale",
    type=click.Choice(SCALES),
    default="quick",
    show_default=True,
    help="quick: minutes on a CPU (digits/synthetic, small models); paper: the papers' settings.",
)
@click.option(
    "--results",
    default="results",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Writes RESULTS/PRESET/SCALE/ and RESULTS/reproduce-SCALE.html.",
)
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: one per core, 1 torch thread each)."
)
@click.option("--reading", help="Another reading of an ambiguous text (e.g. code: the authors' released code).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default $RANKBIAS_DATA or ./data).")
@click.option("--dry-run", is_flag=True, help="Print the runs; train nothing.")
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show the sweep's progress (a bar on a terminal, log lines otherwise).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Seeds per configuration (each sets train.seed and data.subset_seed).",
)
@click.option(
    "--first-seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The first seed (held-out seeds: 100).",
)
@click.argument("args", nargs=-1, metavar="[PRESET]... [OVERRIDES]...")
def reproduce_command(
    args, list_, scale, results, jobs, reading, device, data_dir, dry_run, progress, seeds, first_seed
) -> None:
    """Reproduce figures of the papers (GSGP, GP, CHEN): train, draw, check each claim.

    PRESET: an id (gsgp-fig7), a shell pattern ('gsgp-*') or all. OVERRIDES are dotted.key=value
    pairs that pin a key in every preset, e.g. train.epochs=5. Writes one folder per preset and a
    page of all reproductions at the scale, RESULTS/reproduce-SCALE.html. See docs/reproduce.md.
    """
    import pandas as pd

    from .reproduce import PRESETS, configs, page, reproduce_many, select
    from .reproduce.run import trained_setup
    from .sweep import default_jobs

    patterns, overrides = [a for a in args if "=" not in a], [a for a in args if "=" in a]
    if list_ or not patterns:
        rows = []
        for p in PRESETS.values():
            sizes = {s: configs(p.id, s, seeds=seeds, first_seed=first_seed) for s in SCALES}
            model, data = trained_setup(sizes[scale])  # what trains at the chosen scale, not the paper's
            rows.append(
                {
                    "id": p.id,
                    "figure": p.paper,
                    "model": model,
                    "data": data,
                    "varies": p.varies,
                    **{s: f"{len(c)} × {c[0].train.epochs} ep" for s, c in sizes.items()},
                }
            )
        click.echo(f"model and data: as trained at the {scale} scale (--scale {' or '.join(SCALES)})")
        _print(pd.DataFrame(rows))
        return
    done = reproduce_many(
        select(patterns),
        scale,
        results,
        jobs or default_jobs(),
        dry_run,
        overrides=overrides,
        reading=reading,
        device=device,
        data_root=data_dir,
        progress=progress,
        seeds=seeds,
        first_seed=first_seed,
    )
    for result in done:
        if dry_run:
            click.echo(
                f"{result.preset.paper} ({result.preset.id}, {scale}): {len(result.configs)} run(s); nothing trained"
            )
            _print(result.plan)
            continue
        click.echo(f"{result.preset.id} — {result.preset.paper}: {result.preset.claim.statement}")
        if len(done) == 1 and len(result.claim):
            _print(result.claim)
        click.echo(f"verdict: {result.verdict} — {result.why}")
        figures = ", ".join(map(str, result.figures)) or result.figure_error
        click.echo(f"figure: {figures}; table: {result.out / 'claim.csv'}")
    if not dry_run:
        runs = {r.run_id: r.reused for result in done for r in result.runs}
        click.echo(
            f"{len(runs)} run(s) in {results / 'runs'} ({sum(runs.values())} reused), "
            f"trained in {done[0].seconds:.0f} s"
        )
        click.echo(f"page of every {scale} reproduction under {results}: {page.write(results, scale)}")
