"""Cohort layers: one layer of ``R`` independent networks, with parameters stacked on dim 0.

Activations have shape ``(R, B, features)``: member ``r`` only ever sees its own slice, so ``R``
runs train as one model without mixing (batched matmul, per-member batch norm).

Every parameter and buffer of a cohort module has the member index as its first dimension; the
engine relies on this to slice, save and restore members.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CohortLinear(nn.Module):
    """``R`` linear maps ``x_r W_r^T (+ b_r)``; ``weight`` has shape ``(R, out, in)``.

    Forward and backward are written out (:class:`_CohortLinearFn`) so that each of the three
    batched matmuls takes the operand layout the CPU BLAS is fastest with and the weight gradient
    comes out in the parameter's own layout (no copy when it is accumulated).
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features)) if bias else None

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CohortLinearFn.apply(x, self.weight, self.bias)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        """PyTorch's ``nn.Linear`` default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
        bound = 1 / math.sqrt(self.in_features)
        _uniform(self.weight, r, bound, generator)
        if self.bias is not None:
            _uniform(self.bias, r, bound, generator)

    def set_matrix(self, r: int, matrix: torch.Tensor) -> None:
        """Set member ``r``'s W (shape ``(out, in)``)."""
        with torch.no_grad():
            self.weight[r] = matrix.to(self.weight.device, self.weight.dtype)

    def plain(self, r: int) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.weight[r])
            if self.bias is not None:
                layer.bias.copy_(self.bias[r, 0])
        return layer


class _CohortLinearFn(torch.autograd.Function):
    """``y = x W^T + b`` per member: x (R, B, in), W (R, out, in), b (R, 1, out) or None."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        weight_t = weight.transpose(1, 2)
        return torch.bmm(x, weight_t) if bias is None else torch.baddbmm(bias, x, weight_t)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad_out, weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad_out.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_bias = grad_out.sum(1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class CohortBatchNorm(nn.Module):
    """``R`` batch norms over the batch dimension (PyTorch's ``BatchNorm1d`` semantics).

    ``detach_var``: GP's variant (their Eq. 5), where the normalization matrix A_l(X̃) — the
    variance term — is detached from backpropagation; the mean is not.
    """

    def __init__(self, members: int, features: int, detach_var: bool = False, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.features, self.detach_var, self.momentum, self.eps = features, detach_var, momentum, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, features = x.shape
        if self.training and self.detach_var:
            return self._detached_forward(x)
        # (R, B, H) -> (B, R*H): every (member, feature) pair is one channel of a plain batch norm.
        flat = x.transpose(0, 1).reshape(batch, members * features)
        out = F.batch_norm(
            flat,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.view(-1),
            self.bias.view(-1),
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )
        return out.view(batch, members, features).transpose(0, 1)

    def _detached_forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        with torch.no_grad():
            batch = x.shape[1]
            self.running_mean.lerp_(mean[:, 0], self.momentum)
            self.running_var.lerp_(var[:, 0] * batch / max(batch - 1, 1), self.momentum)
        scale = torch.rsqrt(var.detach() + self.eps)
        return (x - mean) * scale * self.weight[:, None] + self.bias[:, None]

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight[r] = 1
            self.bias[r] = 0
            self.running_mean[r] = 0
            self.running_var[r] = 1

    def plain(self, r: int) -> nn.BatchNorm1d:
        layer = nn.BatchNorm1d(self.features, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            layer.weight.copy_(self.weight[r])
            layer.bias.copy_(self.bias[r])
            layer.running_mean.copy_(self.running_mean[r])
            layer.running_var.copy_(self.running_var[r])
        return layer


def _uniform(param: torch.Tensor, r: int, bound: float, generator: torch.Generator) -> None:
    values = torch.empty(param.shape[1:]).uniform_(-bound, bound, generator=generator)
    with torch.no_grad():
        param[r] = values.to(param.device, param.dtype)
