"""CHEN's two-layer ReLU network ``f(x) = a · σ(V x + b)`` (CHEN Sec. 2, Eq. 1).

``V`` (H × d) and ``a`` (outputs × H) have Kaiming-normal initialization (std sqrt(2 / fan_in)),
``b`` starts at zero. The rank studied is that of ``V``; ``a`` counts as the classifier.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import CohortModel, MatrixInfo
from .layers import CohortLinear


class CohortTwoLayer(CohortModel):
    def __init__(self, members: int, in_dim: int, n_out: int, width: int):
        super().__init__()
        self.members = members
        self.V = CohortLinear(members, in_dim, width, bias=True)
        self.a = CohortLinear(members, width, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(torch.relu(self.V(x.flatten(2))))

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        for layer in (self.V, self.a):
            std = math.sqrt(2.0 / layer.in_features)
            layer.set_matrix(r, torch.randn(layer.out_features, layer.in_features, generator=generator) * std)
        with torch.no_grad():
            self.V.bias[r] = 0

    def matrix_infos(self) -> list[MatrixInfo]:
        return [
            MatrixInfo("V", (self.V.out_features, self.V.in_features)),
            MatrixInfo("a", (self.a.out_features, self.a.in_features), classifier=True),
        ]

    def member_module(self, r: int) -> nn.Module:
        return PlainTwoLayer(self.V.plain(r), self.a.plain(r))


class PlainTwoLayer(nn.Module):
    def __init__(self, V: nn.Linear, a: nn.Linear):
        super().__init__()
        self.V, self.a = V, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(torch.relu(self.V(x.flatten(1))))
