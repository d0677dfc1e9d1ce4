"""One trend test for every monotone claim: blocked Kendall τ, a permutation p-value, an effect
with a bootstrap interval over seeds.

GSGP Prediction 4.1 (the rank falls as B falls, as μ or λ grows), GP Figs. 2–5 and CHEN's
stable rank against λ are all claims that a value (the final average rank, a stable rank)
moves monotonically with a knob. Each is tested the same way (docs/reproduce.md, "The test"):

- **Blocks.** Runs that share every other setting (a panel of the figure) and the seed form a
  block; within block b, τ_b is Kendall's τ-b between the knob and the value, signed so that a
  positive τ is the predicted direction (for B: the rank rises with B; for μ, λ: it falls).
- **Statistic.** T = the mean of τ_b over the blocks that have at least two knob levels.
- **p-value.** The knob's labels are permuted within each block, independently (the null: within
  a block, which run got which knob value does not matter). ``p`` = P(T_perm ≥ T) and
  ``p_opposite`` = P(T_perm ≤ T), exact (every combination of per-block permutations) when there
  are at most :data:`EXACT_LIMIT` combinations, else from ``permutations`` seeded draws with the
  observed arrangement counted once (p ≥ 1/(draws + 1)).
- **Effect.** Per block, the value at the knob level predicted highest minus the value at the
  level predicted lowest, in % of ``full`` (the full rank); per seed, the mean over its blocks;
  the effect is the mean over seeds, with a percentile bootstrap 95 % interval over seeds
  (``scipy.stats.bootstrap``; none with a single seed).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

EXACT_LIMIT = 20_000  # per-block permutation combinations enumerated exactly up to this many
PERMUTATIONS = 4_000  # seeded draws above it
BOOTSTRAP = 2_000  # bootstrap resamples of the seeds
CONFIDENCE = 0.95


@dataclass
class TrendTest:
    """The outcome of :func:`trend_test`; ``blocks`` has one row per block."""

    knob: str
    direction: str  # "smaller" (the value falls as the knob falls) or "larger"
    statistic: float  # mean signed Kendall τ over blocks (NaN: no block)
    p: float  # one-sided permutation p-value, predicted direction
    p_opposite: float  # one-sided, the other direction
    exact: bool  # p from every permutation (else from draws)
    effect: float  # mean over seeds of the extreme-level drop, % of the full value
    ci: tuple[float, float]  # bootstrap interval of ``effect`` over seeds (NaN, NaN with one seed)
    seeds: list = field(default_factory=list)
    per_seed: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))  # effect of each seed
    blocks: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


def signed_tau(knob_values: np.ndarray, values: np.ndarray, direction: str) -> np.ndarray:
    """Kendall's τ-b between each row of ``knob_values`` (P, n) and ``values`` (n,), signed so
    that the predicted direction is positive: for ``smaller`` the value rises with the knob.
    A block whose values (or knob levels) are all equal has τ = 0."""
    x = np.atleast_2d(np.asarray(knob_values, dtype=float))  # (P, n)
    y = np.asarray(values, dtype=float)  # (n,)
    iu = np.triu_indices(len(y), 1)
    sx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]  # (P, pairs)
    sy = np.sign(y[:, None] - y[None, :])[iu]  # (pairs,)
    # the tie counts do not change under a permutation of the knob's labels
    denominator = math.sqrt(float(np.abs(sx[0]).sum()) * float(np.abs(sy).sum()))
    tau = (sx * sy).sum(1) / denominator if denominator > 0 else np.zeros(len(x))
    return tau if direction == "smaller" else -tau


def trend_test(frame: pd.DataFrame, knob: str, direction: str, *, value: str = "value", blocks=("block",),
               seed: str = "seed", full: str = "full", permutations: int = PERMUTATIONS, rng: int = 0) -> TrendTest:
    """The blocked trend test of the module docstring on ``frame`` (one row per run).

    ``frame`` columns: ``knob``, ``value``, the ``blocks`` keys (a block = equal values of all of
    them; include the seed), ``seed`` and ``full`` (the value's full scale, e.g. the full rank).
    ``direction``: ``smaller`` when the value is predicted to fall as the knob falls (B), else
    ``larger`` (μ, λ).
    """
    if direction not in ("smaller", "larger"):
        raise ValueError(f"direction must be 'smaller' or 'larger', got {direction!r}")
    frame = frame.dropna(subset=[value])
    keys = list(blocks)
    groups = [(name, g) for name, g in frame.groupby(keys, sort=True) if g[knob].nunique() > 1] if len(frame) else []
    if not groups:
        nan = float("nan")
        return TrendTest(knob, direction, nan, nan, nan, True, nan, (nan, nan))
    rows, taus = [], []
    for name, g in groups:
        x, y = g[knob].to_numpy(float), g[value].to_numpy(float)
        tau = float(signed_tau(x, y, direction)[0])
        low_level, high_level = (x.min(), x.max()) if direction == "smaller" else (x.max(), x.min())
        drop = y[x == high_level].mean() - y[x == low_level].mean()  # predicted higher minus predicted lower
        rows.append({**dict(zip(keys, name if isinstance(name, tuple) else (name,))), "seed": g[seed].iloc[0],
                     "levels": int(g[knob].nunique()), "runs": len(g), "tau": tau,
                     "drop": 100 * drop / float(g[full].mean())})  # fmt: skip
        taus.append((x, y))
    table = pd.DataFrame(rows)
    observed = float(table["tau"].mean())
    p, p_opposite, exact = _permutation_p(taus, direction, observed, permutations, rng)
    per_seed = table.groupby("seed")["drop"].mean()
    effect = float(per_seed.mean())
    return TrendTest(knob, direction, observed, p, p_opposite, exact, effect, bootstrap_mean(per_seed.to_numpy(), rng),
                     list(per_seed.index), per_seed, table)


def _permutation_p(blocks: list[tuple[np.ndarray, np.ndarray]], direction: str, observed: float, draws: int, rng: int):
    """P(T ≥ observed), P(T ≤ observed) under independent permutations of each block's knob labels."""
    combinations = math.prod(math.factorial(len(x)) for x, _ in blocks)
    exact = combinations <= EXACT_LIMIT
    generator = np.random.default_rng(rng)
    per_block = []  # (K,) τ of each block under the K arrangements
    if exact:
        orders = [np.array(list(itertools.permutations(range(len(x))))) for x, _ in blocks]
        taus = [signed_tau(x[order], y, direction) for (x, y), order in zip(blocks, orders)]
        grids = np.meshgrid(*taus, indexing="ij")  # every combination of per-block arrangements
        total = sum(grid.ravel() for grid in grids) / len(blocks)
    else:
        for x, y in blocks:
            shuffled = generator.permuted(np.broadcast_to(x, (draws, len(x))), axis=1)
            per_block.append(signed_tau(shuffled, y, direction))
        total = np.concatenate([[observed * len(blocks)], np.sum(per_block, 0)]) / len(blocks)
    tolerance = 1e-12
    return float((total >= observed - tolerance).mean()), float((total <= observed + tolerance).mean()), exact


def bootstrap_mean(values: np.ndarray, rng: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (the seeds); NaN with fewer than
    two values. All values equal: the interval is that value."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP,
                             method="percentile", rng=np.random.default_rng(rng))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def sign_flip_p(values: np.ndarray, rng: int = 0) -> tuple[float, float]:
    """One-sided p-values (mean > 0, mean < 0) of a sign-flip permutation test of ``values``
    (``scipy.stats.permutation_test``, exact up to 2^12 values); 1 for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.any(values):
        return 1.0, 1.0
    result = [
        stats.permutation_test(
            (values,),
            np.mean,
            permutation_type="samples",
            alternative=side,
            n_resamples=4096,
            rng=np.random.default_rng(rng),
        ).pvalue
        for side in ("greater", "less")
    ]
    return float(result[0]), float(result[1])
