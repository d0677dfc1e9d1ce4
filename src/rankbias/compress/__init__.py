"""Low-rank compression: cash the low-rank bias in as smaller networks.

- :mod:`.factorize`: any ``torch.nn.Module``, each Linear/Conv2d factorized at its ε-rank;
- :mod:`.runs`: stored runs compressed, evaluated on their own data and stored next to them;
- :mod:`.figure`: accuracy against parameters over ε (imports matplotlib: import it on use).

See ``docs/compress.md``.
"""

from .factorize import LAYER_COLUMNS, compress
from .runs import SUMMARY_COLUMNS, compress_run, evaluate, parse_sweep, read_compressed, smallest

__all__ = [
    "LAYER_COLUMNS",
    "SUMMARY_COLUMNS",
    "compress",
    "compress_run",
    "evaluate",
    "parse_sweep",
    "read_compressed",
    "smallest",
]
