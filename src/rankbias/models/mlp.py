"""MLP-L-H, MLP-BN-L-H, RES-L-H and RES-BN-L-H (GSGP App. B.1, GP Sec. 5).

- ``MLP-(BN-)L-H``: L hidden layers Linear(width H) → [BatchNorm] → ReLU, then a linear output.
- ``RES-(BN-)L-H``: Linear(width H), then L blocks ``z + σ(n2(W2 σ(n1(W1 z))))`` with
  ``n1, n2`` batch norms (identity without BN), then a linear output.

Inputs of any shape are flattened. Linear layers carry no bias unless ``bias=True``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .base import CohortModel, MatrixInfo
from .layers import CohortBatchNorm, CohortLinear


class CohortMLP(CohortModel):
    def __init__(self, members: int, in_dim: int, n_out: int, depth: int, width: int, bn: bool, bias: bool, detach_var: bool):
        super().__init__()
        self.members = members
        dims = [in_dim] + [width] * depth
        self.hidden = nn.ModuleList(CohortLinear(members, a, b, bias) for a, b in itertools.pairwise(dims))
        self.norms = nn.ModuleList(CohortBatchNorm(members, width, detach_var) if bn else nn.Identity() for _ in range(depth))
        self.out = CohortLinear(members, width, n_out, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        for linear, norm in zip(self.hidden, self.norms):
            x = torch.relu(norm(linear(x)))
        return self.out(x)

    def matrix_infos(self) -> list[MatrixInfo]:
        infos = [MatrixInfo(f"hidden.{i}", (m.out_features, m.in_features)) for i, m in enumerate(self.hidden)]
        return infos + [MatrixInfo("out", (self.out.out_features, self.out.in_features), classifier=True)]

    def member_module(self, r: int) -> nn.Module:
        return PlainMLP(
            [m.plain(r) for m in self.hidden],
            [n.plain(r) if isinstance(n, CohortBatchNorm) else nn.Identity() for n in self.norms],
            self.out.plain(r),
        )


class PlainMLP(nn.Module):
    """One member of a :class:`CohortMLP` as an ordinary module (same submodule names)."""

    def __init__(self, hidden: list[nn.Module], norms: list[nn.Module], out: nn.Module):
        super().__init__()
        self.hidden, self.norms, self.out = nn.ModuleList(hidden), nn.ModuleList(norms), out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for linear, norm in zip(self.hidden, self.norms):
            x = torch.relu(norm(linear(x)))
        return self.out(x)


class CohortResBlock(nn.Module):
    def __init__(self, members: int, width: int, bn: bool, bias: bool, detach_var: bool):
        super().__init__()
        self.w1 = CohortLinear(members, width, width, bias)
        self.n1 = CohortBatchNorm(members, width, detach_var) if bn else nn.Identity()
        self.w2 = CohortLinear(members, width, width, bias)
        self.n2 = CohortBatchNorm(members, width, detach_var) if bn else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + torch.relu(self.n2(self.w2(torch.relu(self.n1(self.w1(z))))))


class CohortResMLP(CohortModel):
    def __init__(self, members: int, in_dim: int, n_out: int, depth: int, width: int, bn: bool, bias: bool, detach_var: bool):
        super().__init__()
        self.members = members
        self.input = CohortLinear(members, in_dim, width, bias)
        self.blocks = nn.ModuleList(CohortResBlock(members, width, bn, bias, detach_var) for _ in range(depth))
        self.out = CohortLinear(members, width, n_out, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.input(x.flatten(2))
        for block in self.blocks:
            z = block(z)
        return self.out(z)

    def matrix_infos(self) -> list[MatrixInfo]:
        width = self.input.out_features
        infos = [MatrixInfo("input", (width, self.input.in_features))]
        for i in range(len(self.blocks)):
            infos += [MatrixInfo(f"blocks.{i}.w1", (width, width)), MatrixInfo(f"blocks.{i}.w2", (width, width))]
        return infos + [MatrixInfo("out", (self.out.out_features, width), classifier=True)]

    def member_module(self, r: int) -> nn.Module:
        def plain(module):
            return module.plain(r) if hasattr(module, "plain") else nn.Identity()

        blocks = [PlainResBlock(plain(b.w1), plain(b.n1), plain(b.w2), plain(b.n2)) for b in self.blocks]
        return PlainResMLP(plain(self.input), blocks, plain(self.out))


class PlainResBlock(nn.Module):
    def __init__(self, w1: nn.Module, n1: nn.Module, w2: nn.Module, n2: nn.Module):
        super().__init__()
        self.w1, self.n1, self.w2, self.n2 = w1, n1, w2, n2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + torch.relu(self.n2(self.w2(torch.relu(self.n1(self.w1(z))))))


class PlainResMLP(nn.Module):
    def __init__(self, input: nn.Module, blocks: list[nn.Module], out: nn.Module):
        super().__init__()
        self.input, self.blocks, self.out = input, nn.ModuleList(blocks), out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.input(x.flatten(1))
        for block in self.blocks:
            z = block(z)
        return self.out(z)
