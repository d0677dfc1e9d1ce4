"""rankbias: the implicit low-rank bias of SGD with weight decay, measured.

>>> import rankbias as rb
>>> config = rb.RunConfig.from_dict({"model": "mlp-bn-4-64", "train": {"batch_size": 8, "epochs": 5}})
>>> run = rb.train(config)                 # doctest: +SKIP
>>> records = rb.load(run.path)            # doctest: +SKIP
"""

from .api import Results, RunResult, load, load_model, rerank, spectra, train
from .config import RunConfig, expand, load_configs
from .errors import ConfigError, DataError, RankbiasError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "RankbiasError",
    "Results",
    "RunConfig",
    "RunResult",
    "expand",
    "load",
    "load_model",
    "load_configs",
    "rerank",
    "spectra",
    "train",
]
