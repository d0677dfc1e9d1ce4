"""The layers every architecture is built from, in two flavours with one interface.

An architecture (``mlp.py``, ``resnet.py`` ...) is written once, against a *layer factory*:
:data:`PLAIN` builds ordinary ``torch.nn`` layers (one network), :class:`CohortLayers` builds
layers holding ``R`` independent networks. The architecture's ``forward`` is the same code for
both, because a cohort's activations keep the plain layout with the **members folded into the
channel dimension**:

    plain    (B, C, H, W)    (B, F)      (B, T, D)
    cohort   (B, R·C, H, W)  (B, R·F)    (B, T, R·D)      member r owns channels r·C … (r+1)·C − 1

so ReLU, pooling, residual additions, flattening and attention heads (a member's heads are just
more heads) need no change, and batch norm over ``R·C`` channels *is* per-member batch norm.
Only the layers that hold parameters differ; a cohort layer's parameters have the member as
their first dimension and otherwise the plain layer's shape (``(R, out, in, k, k)`` for a
convolution), so member ``r`` of a cohort is ``state[r]`` loaded into the plain network.

A cohort linear or convolution layer also takes an input **shared by all members** in the plain
layout (``(..., in)``, ``(B, in, H, W)``: an evaluation set), which is never copied R times
(``CohortModel.forward(x, shared=True)``): a linear layer reads it through a stride-0 view, each
member's product the same as on its own input (at one thread a member's records do not depend on
its cohort, to the bit); a convolution is one plain convolution with the stacked
``(R·out, in, k, k)`` kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PlainLayers:
    """The factory of ordinary ``torch.nn`` layers: one network."""

    members = None

    def linear(self, in_features: int, out_features: int, bias: bool, init: str = "uniform") -> nn.Module:
        """``init``: ``uniform`` (``nn.Linear``'s default) or ``kaiming_normal`` (N(0, 2/in) weights,
        zero bias). Only cohort layers initialize: a plain network gets its weights from a member."""
        return nn.Linear(in_features, out_features, bias=bias)

    def conv2d(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False
    ) -> nn.Module:
        return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias)

    def batchnorm(self, features: int, spatial: bool, detach_var: bool = False) -> nn.Module:
        if detach_var:
            return DetachedVarBatchNorm(features)
        return nn.BatchNorm2d(features) if spatial else nn.BatchNorm1d(features)

    def layernorm(self, features: int) -> nn.Module:
        return nn.LayerNorm(features)

    def dropout(self, p: float) -> nn.Module:
        return Dropout(p)

    def parameter(self, *shape: int) -> nn.Module:
        return Tensor(shape)


PLAIN = PlainLayers()


def activation(name: str) -> nn.Module:
    """``relu``, ``leaky_relu`` (slope 0.01, PyTorch's default) or ``gelu``: parameter-free, the
    same module in a plain network and a cohort."""
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}[name]()


class CohortLayers(PlainLayers):
    """The factory of cohort layers for ``members`` networks (see the module docstring)."""

    def __init__(self, members: int):
        self.members = members

    def linear(self, in_features, out_features, bias, init="uniform"):
        return CohortLinear(self.members, in_features, out_features, bias, init)

    def conv2d(self, in_ch, out_ch, kernel, stride=1, padding=0, bias=False):
        return CohortConv2d(self.members, in_ch, out_ch, kernel, stride, padding, bias)

    def batchnorm(self, features, spatial, detach_var=False):
        return CohortBatchNorm(self.members, features, detach_var)

    def layernorm(self, features):
        return CohortLayerNorm(self.members, features)

    def dropout(self, p):
        return CohortDropout(p)

    def parameter(self, *shape):
        return CohortTensor(self.members, shape)


# -- plain layers that torch.nn lacks ---------------------------------------------------------
class DetachedVarBatchNorm(nn.BatchNorm1d):
    """GP's batch norm (their Eq. 5): the variance term A_l(X̃) is detached from backpropagation,
    the mean is not. Any input with channels at dim 1; in eval mode it is ``BatchNorm``."""

    def _check_input_dim(self, input):
        pass

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        return _detached_var_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps
        )


class Dropout(nn.Dropout):
    """``nn.Dropout``; given a ``generator``, it draws its mask from it exactly as a one-member
    :class:`CohortDropout` does (so a cohort run member by member equals the folded cohort)."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * to_device(keep, x.device).to(x.dtype) / (1 - self.p)


class Tensor(nn.Module):
    """A free parameter of ``shape`` (ViT's class token, position embedding); ``forward()``
    returns it. Initialized N(0, 1), as ``torch.randn``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape))

    def forward(self) -> torch.Tensor:
        return self.weight


# -- cohort layers ----------------------------------------------------------------------------
class CohortLinear(nn.Module):
    """``R`` linear maps; ``weight`` ``(R, out, in)``, ``bias`` ``(R, out)``.

    Input ``(..., R·in)``, output ``(..., R·out)``. Forward and backward are written out
    (:class:`_CohortLinearFn`): three batched matmuls with the operand layouts the CPU BLAS
    takes without copies, the weight gradient in the parameter's own layout.

    ``fused_step``: set by ``CohortSGD.fuse``; then the backward applies the optimizer's update to
    ``weight`` itself (``fused_step(g, x)``, the gradient being ``gᵀx``) after computing the input
    gradient with the old weight, and leaves ``weight.grad`` empty (the fused update).
    """

    fused_step = None

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool, init: str = "uniform"):
        super().__init__()
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = self.weight.shape[0]
        if members > 1 and x.shape[-1] == self.in_features:  # an input shared by all members
            xr = x.reshape(1, -1, self.in_features).expand(members, -1, -1)  # (R, N, in), not copied
            wt = self.weight.transpose(1, 2)
            y = torch.bmm(xr, wt) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), xr, wt)  # (R, N, out)
            return y.transpose(0, 1).reshape(*x.shape[:-1], members * self.out_features)
        return _CohortLinearFn.apply(x, self.weight, self.bias, self.fused_step)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        """``uniform``: ``nn.Linear``'s default, U(−1/√in, 1/√in) for weight and bias.
        ``kaiming_normal``: weight N(0, 2/in), bias 0 (CHEN's two-layer network)."""
        if self.init == "uniform":
            _uniform_member(r, generator, 1 / math.sqrt(self.in_features), self.weight, self.bias)
            return
        std = math.sqrt(2.0 / self.in_features)
        with torch.no_grad():
            self.weight[r] = (torch.randn(self.weight.shape[1:], generator=generator) * std).to(self.weight)
            if self.bias is not None:
                self.bias[r] = 0


class _CohortLinearFn(torch.autograd.Function):
    """``y_r = x_r W_rᵀ + b_r`` for x ``(..., R·in)``, W ``(R, out, in)``, b ``(R, out)`` or None.
    With ``fused_step`` (see :class:`CohortLinear`) the backward updates W in place instead of
    returning its gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, fused_step=None):
        members, out_features, in_features = weight.shape
        lead = x.shape[:-1]
        xr = x.reshape(-1, members, in_features).transpose(0, 1)  # (R, N, in), a strided view
        ctx.save_for_backward(xr, weight)
        ctx.has_bias, ctx.lead, ctx.fused_step = bias is not None, lead, fused_step
        wt = weight.transpose(1, 2)  # (R, in, out)
        y = torch.bmm(xr, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), xr, wt)  # (R, N, out)
        return y.transpose(0, 1).reshape(*lead, members * out_features)

    @staticmethod
    def backward(ctx, grad_out):
        xr, weight = ctx.saved_tensors
        members, out_features, in_features = weight.shape
        g = grad_out.reshape(-1, members, out_features).transpose(0, 1)  # (R, N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(g, weight).transpose(0, 1).reshape(*ctx.lead, members * in_features)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # summed member by member: over the strided view, the CPU kernel sums a column with
            # vector or scalar code depending on where it falls among all R·out columns, so a
            # member's bias gradient would depend on its cohort
            grad_b = g.contiguous().sum(1)  # (R, out)
        if ctx.needs_input_grad[1]:
            if ctx.fused_step is not None:
                ctx.fused_step(g, xr)  # W updated in place: after grad_x, which needs the old W
            else:
                grad_w = torch.bmm(g.transpose(1, 2), xr)  # (R, out, in)
        return grad_x, grad_w, grad_b, None


class CohortConv2d(nn.Module):
    """``R`` 2-d convolutions as one grouped convolution (groups = R); ``weight``
    ``(R, out, in, k, k)``. Input ``(B, R·in, H, W)``, output ``(B, R·out, H', W')``.

    As a matrix (GSGP Sec. 3) member r's kernel is ``(out, in·k·k)``: :attr:`matrix`.
    """

    def __init__(self, members: int, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, bias: bool):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_ch, out_ch, kernel
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(members, out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(members, out_ch)) if bias else None

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight.flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = self.weight.shape[0]
        weight = self.weight.flatten(0, 1)  # (R·out, in, k, k): group r is member r
        bias = None if self.bias is None else self.bias.flatten()
        groups = 1 if x.shape[1] == self.in_channels else members  # 1: an input shared by all members
        return F.conv2d(x, weight, bias, self.stride, self.padding, groups=groups)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        """``nn.Conv2d``'s default: U(−1/√fan_in, 1/√fan_in), fan_in = in·k·k."""
        fan_in = self.in_channels * self.kernel_size**2
        _uniform_member(r, generator, 1 / math.sqrt(fan_in), self.weight, self.bias)


class CohortBatchNorm(nn.Module):
    """``R`` batch norms (``BatchNorm1d``/``2d`` semantics): one ``F.batch_norm`` over the
    ``R·C`` folded channels, which normalizes each member's channels over its own batch.

    ``detach_var``: GP's variant (their Eq. 5), the variance term detached from backpropagation.
    """

    def __init__(self, members: int, features: int, detach_var: bool = False, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.features, self.detach_var, self.momentum, self.eps = features, detach_var, momentum, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = (self.weight.view(-1), self.bias.view(-1), self.running_mean.view(-1), self.running_var.view(-1))
        weight, bias, running_mean, running_var = flat
        if self.training and self.detach_var:
            return _detached_var_batch_norm(x, weight, bias, running_mean, running_var, self.momentum, self.eps)
        return F.batch_norm(x, running_mean, running_var, weight, bias, self.training, self.momentum, self.eps)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight[r], self.bias[r] = 1, 0
            self.running_mean[r], self.running_var[r] = 0, 1


class CohortLayerNorm(nn.Module):
    """``R`` layer norms over the last dimension: input ``(..., R·D)``, each member's ``D``
    features normalized on their own, then its own affine ``weight``/``bias`` ``(R, D)``."""

    def __init__(self, members: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.features, self.eps = features, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = self.weight.shape[0]
        xr = x.unflatten(-1, (members, self.features))  # (..., R, D)
        out = torch.addcmul(self.bias, F.layer_norm(xr, (self.features,), eps=self.eps), self.weight)
        return out.flatten(-2)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight[r], self.bias[r] = 1, 0


class CohortDropout(nn.Module):
    """Dropout whose mask for member r comes from member r's own generator, so a member draws
    the same masks in a cohort as alone. The engine hands the generators over
    (:meth:`CohortModel.set_generators`); masks are drawn on the CPU, member by member."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generators: list[torch.Generator] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if len(self.generators) == 0:
            raise RuntimeError("CohortDropout needs the members' generators (CohortModel.set_generators)")
        members = len(self.generators)
        shape = (
            (*x.shape[:-1], x.shape[-1] // members)
            if x.dim() != 4
            else (x.shape[0], x.shape[1] // members, *x.shape[2:])
        )
        draws = [torch.rand(shape, generator=g) >= self.p for g in self.generators]
        keep = torch.stack(draws, dim=-2 if x.dim() != 4 else 1)
        mask = keep.flatten(-2) if x.dim() != 4 else keep.flatten(1, 2)
        return x * to_device(mask, x.device).to(x.dtype) / (1 - self.p)


class CohortTensor(nn.Module):
    """``R`` free parameters of ``shape``; ``forward()`` returns them in the cohort layout, the
    last dimension folded: ``(R, *shape)`` → ``(*shape[:-1], R·shape[-1])``."""

    def __init__(self, members: int, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, *shape))

    def forward(self) -> torch.Tensor:
        return self.weight.movedim(0, -2).flatten(-2)

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight[r] = torch.randn(self.weight.shape[1:], generator=generator).to(self.weight)


# -- helpers ----------------------------------------------------------------------------------
def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t``, drawn on the host during a step (dropout masks, augmentation parameters), on
    ``device`` without synchronizing the host with the GPU: a non-blocking copy from pinned
    memory (PyTorch's caching host allocator keeps the pinned block until the copy is done).
    A plain ``.to(device)`` from pageable memory waits for the GPU's queue to drain."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _detached_var_batch_norm(x, weight, bias, running_mean, running_var, momentum, eps):
    """Batch norm over dim 1 in train mode with the variance detached (GP Eq. 5)."""
    return _DetachedVarBatchNormFn.apply(x, weight, bias, running_mean, running_var, momentum, eps)


def _channel_rows(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` → ``(C, N·...)``, each channel's values contiguous (a copy)."""
    return t.transpose(0, 1).contiguous().view(t.shape[1], -1)


class _DetachedVarBatchNormFn(torch.autograd.Function):
    """y = (x − μ)·s·w + b with s = 1/√(σ² + eps) held constant (GP Eq. 5), μ and σ² per channel
    over the batch (and space). Backward: ∂b = Σ gy, ∂w = Σ gy·x̂, ∂x = w·s·(gy − mean(gy)).

    Every per-channel sum runs over the channel's own contiguous row ``(C, N·H·W)``: summed over
    the batch dimension of ``(N, C)`` in place, a channel's sums would depend on how many
    channels (cohort members) sit beside it, as the CPU kernel takes vector or scalar code by
    column position.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        rows = _channel_rows(x)  # (C, M)
        var, mean = torch.var_mean(rows, dim=1, correction=0)
        count = rows.shape[1]
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * count / max(count - 1, 1), momentum)
        scale = torch.rsqrt(var + eps)
        normalized = (rows - mean[:, None]) * scale[:, None]  # x̂ (C, M)
        ctx.save_for_backward(normalized, weight, scale)
        out = normalized * weight[:, None] + bias[:, None]
        return out.view(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        normalized, weight, scale = ctx.saved_tensors
        rows = _channel_rows(grad_out)  # (C, M)
        grad_bias = rows.sum(1)
        grad_weight = (rows * normalized).sum(1)
        grad_rows = (rows - rows.mean(1, keepdim=True)) * (weight * scale)[:, None]
        shape = grad_out.shape  # x's
        grad_x = grad_rows.view(shape[1], shape[0], *shape[2:]).transpose(0, 1).contiguous()
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _uniform_member(r: int, generator: torch.Generator, bound: float, *params) -> None:
    """Fill member r of each parameter (weight first, then bias) from U(−bound, bound)."""
    with torch.no_grad():
        for param in params:
            if param is not None:
                values = torch.empty(param.shape[1:]).uniform_(-bound, bound, generator=generator)
                param[r] = values.to(param.device, param.dtype)
