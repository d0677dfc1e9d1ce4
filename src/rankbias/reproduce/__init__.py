"""``rankbias reproduce``: every figure of the papers as one command, with its claim checked.

- :mod:`.catalog`: the figures as data (:class:`Preset`: paper- and quick-scale configs,
  figure family and roles, the claim, the readings taken where a paper is ambiguous).
- :mod:`.claims`: a claim checked on the runs (GSGP Prediction 4.1, Thm 3.3, GP Props 1–2 ...).
- :mod:`.run`: :func:`reproduce`, :func:`reproduce_many` (train with ``rb.train``, draw with
  ``rb.plots``, check).
- :mod:`.page`: every reproduction under a results folder as one HTML page and a CSV.

See docs/reproduce.md.
"""

from . import page
from .catalog import PRESETS, Claim, Preset, select
from .claims import FAILS, HOLDS, NOT_ENOUGH, check
from .run import Reproduction, configs, reproduce, reproduce_many

__all__ = [
    "FAILS",
    "HOLDS",
    "NOT_ENOUGH",
    "PRESETS",
    "Claim",
    "Preset",
    "Reproduction",
    "check",
    "configs",
    "page",
    "reproduce",
    "reproduce_many",
    "select",
]
