"""Names and conversions shared by everything that shows or checks hyperparameters.

The config's ``optimizer.weight_decay`` is the coefficient PyTorch's SGD adds to the gradient
(``weight_decay * W``); the papers' figure labels use that same number and call it λ. Their
theory minimizes ``L + λ‖W‖²`` with the update ``W ← W − μ(∇L + 2λW)``, so the theory's λ is
``weight_decay / 2`` and the factor ``2μλ`` of their bounds is ``μ · weight_decay``
(GSGP Sec. 3, GP Sec. 3). :func:`theory_lambda` is the one place that conversion is made.
"""

from __future__ import annotations

# How the papers write the swept hyperparameters (figure labels, table headers).
SYMBOLS = {
    "train.batch_size": "B",
    "optimizer.lr": "μ",
    "optimizer.weight_decay": "λ",
    "optimizer.momentum": "momentum",
    "model.name": "model",
    "data.name": "data",
    "train.seed": "seed",
}

# The scales of `rankbias reproduce`: quick (minutes on a CPU, small models) and paper (the papers' settings).
SCALES = ("quick", "paper")

# Runs that differ only in these keys are replicates of one configuration (seeds): figures draw
# their mean, the trend tests block on everything else.
REPLICATE_KEYS = ("train.seed", "data.subset_seed")

LAMBDA_NOTE = (
    "λ is the optimizer's weight_decay (added to the gradient as λ·W), as in the papers' figure labels; "
    "the λ of their theory is weight_decay / 2."
)


def theory_lambda(weight_decay: float) -> float:
    """The papers' λ in ``L + λ‖W‖²`` from the optimizer's ``weight_decay`` (= 2λ)."""
    return weight_decay / 2


def symbol(key: str) -> str:
    """The paper's symbol for a config key (``train.batch_size`` → ``B``), else the key itself."""
    return SYMBOLS.get(key, key)
