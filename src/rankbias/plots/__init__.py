"""Figures of stored records: one function per figure family of the papers.

Each function takes a :class:`rankbias.Results` (from ``rb.load``) or a results path and returns
a :class:`matplotlib.figure.Figure` (no pyplot). Roles: ``vary`` (one line per value),
``panel`` (one panel per value), ``x``/``y`` (heatmap axes), each a config key, its paper
symbol (B, μ, λ) or its last part (``batch_size``); left out, they take the keys that vary.
``where={key: value}`` picks runs; ``eps``/``norm`` recompute ranks from the stored singular
values. Save with :func:`save` (``.pdf`` is vector). See docs/report.md.

:data:`FIGURES` registers every figure of rankbias by name: these families, and the figures of
the theory checks and of compression, which draw a table (``rankbias.theory.figures``,
``rankbias.compress.figure``).

>>> import rankbias as rb
>>> fig = rb.plots.rank_vs_epoch("results/demo", vary="B", panel="λ")  # doctest: +SKIP
>>> rb.plots.save(fig, "fig.pdf")                                     # doctest: +SKIP
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PlotError
from .final import layer_ranks, rank_heatmap, weight_decay_generalization
from .spectra import layer_spectra, rank_vs_eps, spectra_over_training
from .style import save
from .training import convergence, norm_ratio, rank_vs_epoch


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure.

    ``number``: its family's number in docs/report.md (one per family, 1 to 9), or for a figure of a table its group
    (``"theory"``, ``"compress"``). ``target``: the function that draws it, or its
    ``"module:function"`` path (the theory and compression figures import this package, so they
    are imported on first use). ``help``: one line for ``rankbias plot --help``. ``table``:
    ``None`` when ``function(results, where=..., **roles)`` draws records or a results folder
    (``rankbias plot``); else the table it draws instead, and where it comes from.
    """

    number: int | str
    target: Callable | str
    help: str
    table: str | None = None

    @property
    def function(self) -> Callable:
        if callable(self.target):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


FIGURES: dict[str, FigureSpec] = {
    name: FigureSpec(*entry)
    for name, entry in {
        "rank-vs-epoch": (1, rank_vs_epoch, "average rank and train/test accuracy per epoch"),
        "heatmap": (2, rank_heatmap, "final average rank over two hyperparameters, annotated"),
        "layer-ranks": (3, layer_ranks, "rank of each weight matrix against its layer index"),
        "layer-spectra": (4, layer_spectra, "normalized singular values per matrix, with the ε line"),
        "convergence": (5, convergence, "d(W_t+1, W_t), train loss and accuracy per epoch"),
        "norm-ratio": (6, norm_ratio, "per-layer ||W_t-1|| / ||W_t|| over training"),
        "weight-decay": (7, weight_decay_generalization, "CHEN: stable rank, train MSE, test - train against λ"),
        "rank-vs-eps": (8, rank_vs_eps, "average rank against the threshold ε"),
        "spectra-over-training": (9, spectra_over_training, "one matrix's singular values: epoch × index image"),
        "theorem-3-3": (
            "theory",
            "rankbias.theory.figures:theorem_3_3_figure",
            "GSGP Fig. 18: Thm 3.3's bound and the measured ε-rank against ε",
            "rb.theory.theorem_3_3(records); `rankbias theory RESULTS` prints it",
        ),
        "lemma-3-2": (
            "theory",
            "rankbias.theory.figures:lemma_3_2_figure",
            "GSGP Lemma 3.2: distance to rank ≤ m_l·B·n and its bound against n",
            "rb.theory.lemma_3_2(records), with record.step_norms; `rankbias theory RESULTS` prints it",
        ),
        "batch-gradients": (
            "theory",
            "rankbias.theory.figures:batch_gradient_figure",
            "CHEN Figs. 3/7: batch-gradient norms, Gaussian reference",
            "rb.theory.chen_theorem_2_6(run), from the trained network; `rankbias theory RUN` prints it",
        ),
        "gradient-rank": (
            "theory",
            "rankbias.theory.figures:gradient_rank_figure",
            "GSGP Lemma 3.1 / GP Lemma 2: gradient rank and bound per matrix",
            "rb.theory.gradient_rank_at(run, samples), from the network; `rankbias theory --gradient-rank RUN`",
        ),
        "prediction-4-1": (
            "theory",
            "rankbias.theory.figures:prediction_figure",
            "GSGP Prediction 4.1: each knob's effect, λ = 0 control, verdict",
            "rb.theory.prediction_4_1(records); `rankbias theory RESULTS` prints it",
        ),
        "compression": (
            "compress",
            "rankbias.compress.figure:compression_figure",
            "test accuracy against parameter count over ε",
            "rb.read_compressed(results)[0]; `rankbias compress RESULTS` draws it",
        ),
    }.items()
}


def results_figure(name: str) -> Callable:
    """The function of figure ``name`` that draws records or a results folder (what ``rankbias
    plot`` calls); a :class:`PlotError` for an unknown name or a figure drawn from a table."""
    figure = FIGURES.get(name)
    if figure is None:
        drawable = [n for n, f in FIGURES.items() if f.table is None]
        raise PlotError(f"unknown figure family {name!r}; one of: {', '.join(drawable)}")
    if figure.table is not None:
        function = f"{figure.function.__module__}.{figure.function.__name__}"
        raise PlotError(
            f"{name} is drawn from a table, not from a results folder: "
            f"in Python, {function}(table) with the table of {figure.table}"
        )
    return figure.function


__all__ = [
    "FIGURES",
    "FigureSpec",
    "PlotError",
    "convergence",
    "layer_ranks",
    "layer_spectra",
    "norm_ratio",
    "rank_heatmap",
    "rank_vs_epoch",
    "rank_vs_eps",
    "results_figure",
    "save",
    "spectra_over_training",
    "weight_decay_generalization",
]
