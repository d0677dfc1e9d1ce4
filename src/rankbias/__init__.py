"""rankbias: the implicit low-rank bias of SGD with weight decay, measured.

>>> import rankbias as rb
>>> config = rb.RunConfig.from_dict({"model": "mlp-bn-4-64", "train": {"batch_size": 8, "epochs": 5}})
>>> run = rb.train(config)                 # doctest: +SKIP
>>> records = rb.load(run.path)            # doctest: +SKIP
"""

import importlib

from .api import RunResult, load_model, spectra, train
from .compress import compress, compress_run, read_compressed
from .config import RunConfig, expand, load_configs
from .errors import ConfigError, DataError, RankbiasError
from .models import list_models
from .query import export, query
from .store.records import Results, load, rerank

__version__ = "0.1.0"

# imported on first use (they import matplotlib): a training process or a CLI call that draws
# nothing does not pay for it. rb.plots.rank_vs_epoch ...: one function per figure family
# (docs/report.md); rb.theory.lemma_3_2 ...: the papers' checks (docs/theory.md)
LAZY = ("plots", "theory")


def __getattr__(name: str):
    if name in LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *LAZY})

__all__ = [
    "ConfigError",
    "DataError",
    "RankbiasError",
    "Results",
    "RunConfig",
    "RunResult",
    "compress",
    "compress_run",
    "expand",
    "export",
    "list_models",
    "load",
    "load_configs",
    "load_model",
    "plots",
    "query",
    "read_compressed",
    "rerank",
    "spectra",
    "theory",
    "train",
]
