"""Figures of stored records: one function per figure family of the papers.

Each function takes a :class:`rankbias.Results` (from ``rb.load``) or a results path and returns
a :class:`matplotlib.figure.Figure` (no pyplot). Roles: ``vary`` (one line per value),
``panel`` (one panel per value), ``x``/``y`` (heatmap axes), each a config key, its paper
symbol (B, μ, λ) or its last part (``batch_size``); left out, they take the keys that vary.
``where={key: value}`` picks runs; ``eps``/``norm`` recompute ranks from the stored singular
values. Save with :func:`save` (``.pdf`` is vector). See docs/report.md.

>>> import rankbias as rb
>>> fig = rb.plots.rank_vs_epoch("results/demo", vary="B", panel="λ")  # doctest: +SKIP
>>> rb.plots.save(fig, "fig.pdf")                                     # doctest: +SKIP
"""

from .final import layer_ranks, rank_heatmap, weight_decay_generalization
from .select import PlotError
from .spectra import layer_spectra, rank_vs_eps, spectra_over_training
from .style import save
from .training import convergence, norm_ratio, rank_vs_epoch

# CLI name -> (family number, function, one line for --help)
FAMILIES = {
    "rank-vs-epoch": (1, rank_vs_epoch, "average rank and train/test accuracy per epoch"),
    "heatmap": (2, rank_heatmap, "final average rank over two hyperparameters, annotated"),
    "layer-ranks": (3, layer_ranks, "rank of each weight matrix against its layer index"),
    "layer-spectra": (4, layer_spectra, "normalized singular values per matrix, with the ε line"),
    "convergence": (5, convergence, "d(W_t+1, W_t), train loss and accuracy per epoch"),
    "norm-ratio": (5, norm_ratio, "per-layer ||W_t-1|| / ||W_t|| over training"),
    "weight-decay": (6, weight_decay_generalization, "CHEN: stable rank, train MSE, test - train against λ"),
    "rank-vs-eps": (7, rank_vs_eps, "average rank against the threshold ε"),
    "spectra-over-training": (8, spectra_over_training, "one matrix's singular values: epoch × index image"),
}

__all__ = [
    "FAMILIES",
    "PlotError",
    "convergence",
    "layer_ranks",
    "layer_spectra",
    "norm_ratio",
    "rank_heatmap",
    "rank_vs_epoch",
    "rank_vs_eps",
    "save",
    "spectra_over_training",
    "weight_decay_generalization",
]
