"""Rank measures of a weight matrix, computed from its singular values.

Every function takes singular values ``sv`` of shape ``(..., k)`` (torch tensor or numpy array,
any order, zeros allowed) and returns one value per matrix, of the same array type.

- ε-rank (GSGP Sec. 4, GP Sec. 5): the number of singular values of ``W / ||W||`` above ε, where
  ``||W||`` is the Frobenius norm (the papers' default) or the spectral norm.
- stable rank (CHEN Sec. 4): ``||W||_F^2 / ||W||_2^2``.
- effective rank (Roy & Vetterli, 2007): ``exp(H(p))`` with ``p_i = σ_i / Σ_j σ_j``.

A zero matrix has rank 0 under all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..config import DEFAULT_EPS, NORMS  # the one definition of each; importable from here too
from ..errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a tensor is measured: readers of records never load it
    import torch


def singular_values(matrices: torch.Tensor) -> torch.Tensor:
    """Singular values of a stack of matrices ``(..., m, n)``, descending, float32, batched."""
    import torch

    return torch.linalg.svdvals(matrices.float())


def frobenius_norm(sv):
    return _lib(sv).sqrt((sv * sv).sum(-1))


def spectral_norm(sv):
    return sv.max(-1) if isinstance(sv, np.ndarray) else sv.amax(-1)


def eps_rank(sv, eps: float = DEFAULT_EPS, norm: str = "fro"):
    """Number of singular values of the normalized matrix above ``eps`` (GSGP's rank)."""
    if norm not in NORMS:
        raise ConfigError("norm", f"must be one of {NORMS}, got {norm!r}")
    scale = frobenius_norm(sv) if norm == "fro" else spectral_norm(sv)
    above = sv > eps * scale[..., None]
    above = above & (scale[..., None] > 0)
    return above.sum(-1)


def stable_rank(sv):
    """``||W||_F^2 / ||W||_2^2`` (CHEN); 0 for the zero matrix."""
    top = spectral_norm(sv)
    total = (sv * sv).sum(-1)
    safe = _lib(sv).where(top > 0, top, 1)
    return _lib(sv).where(top > 0, total / (safe * safe), 0 * total)


def effective_rank(sv):
    """``exp`` of the entropy of the normalized singular values (Roy & Vetterli); 0 for W = 0."""
    lib = _lib(sv)
    total = sv.sum(-1, keepdims=True) if lib is np else sv.sum(-1, keepdim=True)
    p = sv / lib.where(total > 0, total, 1)
    plogp = lib.where(p > 0, p * lib.log(lib.where(p > 0, p, 1)), 0 * p)
    value = lib.exp(-plogp.sum(-1))
    return lib.where(total[..., 0] > 0, value, 0 * value)


def rank_measures(sv, eps: float = DEFAULT_EPS, norm: str = "fro") -> dict:
    """All measures of one stack of singular values, keyed by record column name."""
    return {
        "fro_norm": frobenius_norm(sv),
        "spectral_norm": spectral_norm(sv),
        "eps_rank": eps_rank(sv, eps, norm),
        "stable_rank": stable_rank(sv),
        "effective_rank": effective_rank(sv),
    }


def _lib(sv):
    if isinstance(sv, np.ndarray):
        return np
    import torch

    return torch
