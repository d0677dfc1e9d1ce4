"""Fully connected families: MLP-(BN-)L-H, RES-(BN-)L-H (GSGP App. B.1, GP Sec. 5) and CHEN's
two-layer network.

- ``MLP-(BN-)L-H``: L hidden layers Linear(width H) → [BatchNorm] → activation, then a linear output.
- ``RES-(BN-)L-H``: Linear(width H), then L blocks ``z + σ(n2(W2 σ(n1(W1 z))))`` with ``n1, n2``
  batch norms (identity without BN), then a linear output.
- ``twolayer-H``: ``f(x) = a · σ(V x + b)`` (CHEN Sec. 2, Eq. 1).

Inputs of any shape are flattened. Linear layers carry no bias unless ``model.bias``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from .layers import activation
from .registry import register

_FC = {"bias": False, "activation": "relu", "bn_detach_var": False}
_FC_PLAIN = {"bias": False, "activation": "relu"}


def _norm(layers, spec, width: int, bn: bool) -> nn.Module:
    return layers.batchnorm(width, spatial=False, detach_var=spec.bn_detach_var) if bn else nn.Identity()


class MLP(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out, bn: bool):
        super().__init__()
        dims = [math.prod(input_shape)] + [spec.width] * spec.depth
        self.hidden = nn.ModuleList(layers.linear(a, b, spec.bias) for a, b in itertools.pairwise(dims))
        self.norms = nn.ModuleList(_norm(layers, spec, spec.width, bn) for _ in range(spec.depth))
        self.act = activation(spec.activation)
        self.out = layers.linear(spec.width, n_out, spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for linear, norm in zip(self.hidden, self.norms):
            x = self.act(norm(linear(x)))
        return self.out(x)


@register("mlp-{depth:L}-{width:H}", "GSGP App. B.1; GP Sec. 5", classifier="out", **_FC_PLAIN)
def mlp(layers, spec, input_shape, n_out):
    """L hidden Linear→ReLU layers of width H, then a linear output."""
    return MLP(layers, spec, input_shape, n_out, bn=False)


@register("mlp-bn-{depth:L}-{width:H}", "GSGP App. B.1; GP Sec. 5", classifier="out", **_FC)
def mlp_bn(layers, spec, input_shape, n_out):
    """The same with batch norm: Linear→BN→ReLU."""
    return MLP(layers, spec, input_shape, n_out, bn=True)


class ResBlock(nn.Module):
    def __init__(self, layers, spec, bn: bool):
        super().__init__()
        self.w1, self.n1 = layers.linear(spec.width, spec.width, spec.bias), _norm(layers, spec, spec.width, bn)
        self.w2, self.n2 = layers.linear(spec.width, spec.width, spec.bias), _norm(layers, spec, spec.width, bn)
        self.act = activation(spec.activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.act(self.n2(self.w2(self.act(self.n1(self.w1(z))))))


class ResMLP(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out, bn: bool):
        super().__init__()
        self.input = layers.linear(math.prod(input_shape), spec.width, spec.bias)
        self.blocks = nn.ModuleList(ResBlock(layers, spec, bn) for _ in range(spec.depth))
        self.out = layers.linear(spec.width, n_out, spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.input(x.flatten(1))
        for block in self.blocks:
            z = block(z)
        return self.out(z)


@register("res-{depth:L}-{width:H}", "GSGP App. B.1; GP Sec. 5", classifier="out", **_FC_PLAIN)
def res(layers, spec, input_shape, n_out):
    """Linear of width H, L residual blocks z + σ(W2 σ(W1 z)), linear output."""
    return ResMLP(layers, spec, input_shape, n_out, bn=False)


@register("res-bn-{depth:L}-{width:H}", "GSGP App. B.1; GP Sec. 5", classifier="out", **_FC)
def res_bn(layers, spec, input_shape, n_out):
    """The same with batch norm in each block: z + σ(n2(W2 σ(n1(W1 z))))."""
    return ResMLP(layers, spec, input_shape, n_out, bn=True)


class TwoLayer(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out):
        super().__init__()
        self.V = layers.linear(math.prod(input_shape), spec.width, spec.bias, init="kaiming_normal")
        self.act = activation(spec.activation)
        self.a = layers.linear(spec.width, n_out, False, init="kaiming_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(self.act(self.V(x.flatten(1))))


@register("twolayer-{width:H}", "CHEN Sec. 2, Eq. 1", classifier="a", bias=True, activation="relu")
def twolayer(layers, spec, input_shape, n_out):
    """CHEN's a·σ(Vx+b) with H hidden units: Kaiming-normal V and a, b = 0; the rank studied is V's."""
    return TwoLayer(layers, spec, input_shape, n_out)
