"""The papers' lemmas and bounds, checked on real runs (``docs/theory.md``).

Every check returns a pandas DataFrame with the columns ``check, run_id, layer, epoch, param,
measured, bound, holds, trivial, note`` (plus its own): the measured quantity, the paper's bound,
whether it holds, and why it fails or why it is trivial.

- :func:`gradient_rank`: per-sample gradient ranks (GSGP Lemma 3.1, GP Lemma 1; GP Lemma 2 with
  batch norm) of any module; :func:`gradient_rank_at` for a config or a stored run.
- :func:`lemma_3_2`: GSGP Lemma 3.2 from step-level weight norms (``record.step_norms``).
- :func:`theorem_3_3`: GSGP Theorem 3.3's rank bound against the measured ε-rank, over ε.
- :func:`gp_theorem_1`: GP Theorem 1 from batch gradients of a stored network.
- :func:`sgd_noise`: GP Propositions 1–2, d(W_{t+1}, W_t) at the end of training.
- :func:`chen_theorem_2_6`: CHEN Assumption 2.5 (batch-gradient norms) and Theorem 2.6.
- :func:`prediction_4_1`: GSGP Prediction 4.1 on a sweep: a trend test per knob (:mod:`.trend`), with its λ = 0 control.
- :func:`check_run`: every check that applies to a run (or the record-based ones to a sweep);
  :func:`record_checks`: the record-based ones of loaded records (no network, no gradient).

Figures: :mod:`rankbias.theory.figures` (imported on demand; matplotlib, Agg backend).
"""

from ._common import COLUMNS
from .chen import chen_theorem_2_6
from .gp import gp_theorem_1, sgd_noise
from .gradients import gradient_rank, weight_matrices
from .gsgp import THEOREM_3_3_EPS, lemma_3_2, theorem_3_3
from .prediction import Prediction, prediction_4_1
from .run import check_run, gradient_rank_at, record_checks

__all__ = [
    "COLUMNS",
    "THEOREM_3_3_EPS",
    "Prediction",
    "check_run",
    "chen_theorem_2_6",
    "gp_theorem_1",
    "gradient_rank",
    "gradient_rank_at",
    "lemma_3_2",
    "prediction_4_1",
    "record_checks",
    "sgd_noise",
    "theorem_3_3",
    "weight_matrices",
]

# checks whose bound is an identity of the update or of the gradient: a violation is a bug
IDENTITIES = ("gsgp_lemma_3_1", "gp_lemma_2", "gsgp_lemma_3_2", "gp_theorem_1")
