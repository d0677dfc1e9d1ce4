"""rankbias: the implicit low-rank bias of SGD with weight decay, measured.

>>> import rankbias as rb
>>> config = rb.RunConfig.from_dict({"model": "mlp-bn-4-64", "train": {"batch_size": 8, "epochs": 5}})
>>> run = rb.train(config)                 # doctest: +SKIP
>>> records = rb.load(run.path)            # doctest: +SKIP
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# Every name is imported on first use (PEP 562): `import rankbias` costs nothing, so a command that
# reads records (`rankbias status`, `show`, `query`) or prints help never loads torch, and one that
# draws nothing never loads matplotlib. rb.plots.rank_vs_epoch ...: one function per figure family
# (docs/report.md); rb.theory.lemma_3_2 ...: the papers' checks (docs/theory.md).
SOURCES = {
    "RunResult": "api", "load_model": "api", "spectra": "api", "train": "api",
    "compress": "compress", "compress_run": "compress", "read_compressed": "compress",
    "RunConfig": "config", "expand": "config", "load_configs": "config",
    "ConfigError": "errors", "DataError": "errors", "RankbiasError": "errors",
    "list_models": "models",
    "export": "query", "query": "query",
    "Results": "store.records", "load": "store.records", "rerank": "store.records",
    "Tracker": "track",
    "export_to": "sinks",
}  # fmt: skip
LAZY = ("plots", "theory")


def __getattr__(name: str):
    if name in LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in SOURCES:
        value = getattr(importlib.import_module(f".{SOURCES[name]}", __name__), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *LAZY, *SOURCES})


class _Package(types.ModuleType):
    """The import system binds each submodule on its package; rb.query, rb.compress and rb.spectra
    are functions named like their modules, and that binding must not hide them."""

    def __setattr__(self, name, value):
        if not (name in SOURCES and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "ConfigError",
    "DataError",
    "RankbiasError",
    "Results",
    "RunConfig",
    "RunResult",
    "Tracker",
    "compress",
    "compress_run",
    "expand",
    "export",
    "export_to",
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
