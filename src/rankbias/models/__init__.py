"""Model registry: names like ``mlp-bn-10-100``, ``res-5-500``, ``twolayer-8192``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .base import CohortModel, MatrixInfo
from .mlp import CohortMLP, CohortResMLP
from .two_layer import CohortTwoLayer

__all__ = [
    "MODEL_PATTERNS",
    "CohortModel",
    "MatrixInfo",
    "ModelSpec",
    "build_model",
    "matrix_infos",
    "parse_model_name",
    "plain_model",
]

MODEL_PATTERNS = {
    "mlp-L-H": "L hidden Linear→ReLU layers of width H (GSGP, GP)",
    "mlp-bn-L-H": "the same with batch norm: Linear→BN→ReLU",
    "res-L-H": "Linear of width H, L residual blocks z + σ(W2 σ(W1 z)), linear output",
    "res-bn-L-H": "the same with batch norm in each block",
    "twolayer-H": "CHEN's a·σ(Vx+b) with H hidden units",
}
_PLANNED = ("vgg16", "resnet18", "vit")
_NAME = re.compile(r"^(?:(?P<family>mlp|mlp-bn|res|res-bn)-(?P<depth>\d+)-(?P<width>\d+)|twolayer-(?P<hidden>\d+))$")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # mlp, mlp-bn, res, res-bn, twolayer
    depth: int
    width: int


def parse_model_name(name: str) -> ModelSpec:
    """``mlp-bn-10-100`` → ModelSpec("mlp-bn", 10, 100); a ValueError names the known patterns."""
    match = _NAME.match(name.lower())
    if match is None:
        known = "; ".join(f"{p} ({d})" for p, d in MODEL_PATTERNS.items())
        extra = f" {name!r} is planned but not available yet." if name.lower() in _PLANNED else ""
        raise ValueError(f"unknown model {name!r}.{extra} Known: {known}")
    if match["hidden"]:
        spec = ModelSpec("twolayer", 1, int(match["hidden"]))
    else:
        spec = ModelSpec(match["family"], int(match["depth"]), int(match["width"]))
    if spec.depth < 1 or spec.width < 1:
        raise ValueError(f"model {name!r}: depth and width must be at least 1")
    return spec


def build_model(config, members: int, input_shape: tuple[int, ...], n_out: int) -> CohortModel:
    """A cohort of ``members`` networks for ``config`` (a :class:`rankbias.config.ModelConfig`)."""
    spec = parse_model_name(config.name)
    in_dim = math.prod(input_shape)
    if spec.family == "twolayer":
        return CohortTwoLayer(members, in_dim, n_out, spec.width)
    cls = CohortMLP if spec.family.startswith("mlp") else CohortResMLP
    return cls(members, in_dim, n_out, spec.depth, spec.width, spec.family.endswith("bn"), config.bias, config.bn_detach_var)


def plain_model(config, input_shape: tuple[int, ...], n_out: int, seed: int = 0):
    """One network for ``config`` as a plain ``torch.nn.Module``, initialized as a run with
    ``train.seed = seed`` would be. Inputs ``(batch, *input_shape)``, outputs ``(batch, n_out)``."""
    import torch

    cohort = build_model(config, 1, input_shape, n_out)
    cohort.reset_member(0, torch.Generator().manual_seed(seed))
    return cohort.member_module(0)


def matrix_infos(config, input_shape: tuple[int, ...], n_out: int) -> list[MatrixInfo]:
    """The weight matrices of the model (names as in :func:`plain_model`'s module), without
    allocating its weights."""
    import torch

    with torch.device("meta"):
        return build_model(config, 1, input_shape, n_out).matrix_infos()
