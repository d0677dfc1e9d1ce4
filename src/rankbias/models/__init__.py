"""Models by name: ``mlp-bn-10-100``, ``res-5-500``, ``twolayer-8192``, ``convnet-3-64``,
``vgg16``, ``resnet18``, ``vit`` (see ``docs/models.md`` and :func:`list_models`).

Each family is defined once (``mlp.py``, ``conv.py``, ``vit.py``) against a layer factory and
registered with :func:`~rankbias.models.registry.register`; the same definition gives a cohort of
``R`` networks (:func:`build_model`) and one plain ``torch.nn.Module`` (:func:`plain_model`).
"""

from __future__ import annotations

import torch

# each module registers its families: mlp.py's first, as `rankbias models` lists them
from . import mlp  # noqa: F401

# isort: split
from . import conv, vit  # noqa: F401
from .base import CohortModel, MatrixInfo
from .registry import FAMILIES, ModelSpec, list_models, resolve

__all__ = [
    "FAMILIES",
    "CohortModel",
    "MatrixInfo",
    "ModelSpec",
    "build_model",
    "list_models",
    "matrix_infos",
    "parse_model_name",
    "plain_model",
    "resolve",
]


def parse_model_name(name: str) -> ModelSpec:
    """``mlp-bn-10-100`` → ModelSpec("mlp-bn", 10, 100) with the family's default options."""
    from ..config import ModelConfig

    return resolve(ModelConfig(name=name))


def build_model(config, members: int, input_shape: tuple[int, ...], n_out: int, strategy: str = "auto") -> CohortModel:
    """A cohort of ``members`` networks for ``config`` (a :class:`rankbias.config.ModelConfig`).
    Its parameters are allocated but not initialized: see :meth:`CohortModel.reset_member`.
    ``strategy``: how the members run (:class:`CohortModel`); it never changes the result."""
    return CohortModel(resolve(config), members, tuple(input_shape), n_out, strategy)


def plain_model(config, input_shape: tuple[int, ...], n_out: int, seed: int = 0) -> torch.nn.Module:
    """One network for ``config`` as a plain ``torch.nn.Module``, initialized as a run with
    ``train.seed = seed`` would be. Inputs ``(batch, *input_shape)``, outputs ``(batch, n_out)``."""
    cohort = build_model(config, 1, input_shape, n_out)
    cohort.reset_member(0, torch.Generator().manual_seed(seed))
    return cohort.member_module(0)


def matrix_infos(config, input_shape: tuple[int, ...], n_out: int) -> list[MatrixInfo]:
    """The weight matrices of the model (names as in :func:`plain_model`'s module), without
    allocating its weights."""
    with torch.device("meta"):
        return build_model(config, 1, input_shape, n_out).matrix_infos()
