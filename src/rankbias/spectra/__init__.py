"""Singular values and rank measures of weight matrices."""

from .measures import effective_rank, eps_rank, rank_measures, singular_values, stable_rank

__all__ = ["effective_rank", "eps_rank", "rank_measures", "singular_values", "stable_rank"]
