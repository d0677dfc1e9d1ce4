"""Training: the cohort engine, its optimizer and losses."""

from .engine import CohortTrainer, Member

__all__ = ["CohortTrainer", "Member"]
