"""Low-rank factorization of any ``torch.nn.Module`` at its layers' ε-ranks (:func:`compress`).

- A linear layer ``W`` (out × in) of ε-rank ``r`` (:func:`rankbias.spectra.measures.eps_rank`:
  the number of singular values of ``W/‖W‖`` above ε) is replaced by its truncated SVD
  ``W ≈ (U_r Σ_r^½)(Σ_r^½ V_rᵀ)`` as two layers, ``Linear(in, r, bias=False)`` then
  ``Linear(r, out)`` carrying the original bias, when ``r·(in + out) < in·out``.
- A ``Conv2d`` with weight (out, in, k1, k2), viewed as the (out, in·k1·k2) matrix of GSGP
  Sec. 3, becomes a k1×k2 convolution to ``r`` channels (same stride, padding, dilation, padding
  mode; no bias) followed by a 1×1 convolution to ``out`` channels carrying the bias, when
  ``r·(in·k1·k2 + out) < out·in·k1·k2``. By Eckart–Young the truncation is the best rank-r
  approximation of the matrix in Frobenius and spectral norm; at full rank it is exact.
- Every other layer (batch norm, attention, embeddings ...) is kept as it is, and every
  parameter of two or more dimensions that is not compressed gets a row in the table saying why.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import skip_init

from ..config import DEFAULT_EPS
from ..errors import ConfigError
from ..spectra.measures import NORMS, eps_rank, singular_values

LAYER_COLUMNS = [
    "name", "kind", "shape", "rank", "params_before", "params_after",
    "flops_before", "flops_after", "compressed", "reason",
]
# torch.nn modules that only hold and call their children; a Linear or Conv2d inside any other
# built-in module (nn.MultiheadAttention, nn.TransformerEncoderLayer's fast path ...) may have
# its .weight read directly by the owner, so replacing it would break the owner.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def compress(
    module: nn.Module,
    eps: float = DEFAULT_EPS,
    norm: str = "fro",
    *,
    input_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """A copy of ``module`` with each ``nn.Linear`` and ``nn.Conv2d`` factorized at its ε-rank.

    ``eps``, ``norm``: the rank threshold as in the records (``norm`` ``"fro"`` or ``"spectral"``).
    ``input_shape``: one sample's shape without the batch dimension; when given, one forward
    pass measures how many positions each layer is applied to (a convolution's output height ×
    width, a linear layer's tokens), so FLOPs are known for convolutions too, and checks that the
    compressed copy runs. The original module is not changed.

    Returns the new module and one row per layer or parameter: ``name``, ``kind`` (module class),
    ``shape`` (of the weight), ``rank`` (ε-rank of the weight as a matrix), ``params_before`` /
    ``params_after`` (weight and bias of that layer), ``flops_before`` / ``flops_after``
    (multiply-adds per sample; NaN where unknown), ``compressed``, ``reason``.
    """
    if not eps > 0:
        raise ConfigError("eps", f"must be > 0, got {eps}")
    if norm not in NORMS:
        raise ConfigError("norm", f"must be one of {NORMS}, got {norm!r}")
    positions = _positions(module, input_shape) if input_shape is not None else {}
    new = copy.deepcopy(module)
    modules = dict(module.named_modules())
    owners = _parameter_owners(module)
    rows = {}  # by the weight's identity
    for name, layer in modules.items():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            # not measured: a linear layer is taken to see one vector per sample, a convolution unknown
            unmeasured = 1 if input_shape is None and isinstance(layer, nn.Linear) else math.nan
            row = _layer_row(name, layer, eps, norm, positions.get(name, unmeasured))
            why_not = _unsupported(name, layer, modules, owners)
            if why_not is None and row["params_after"] < row["params_before"]:
                factors = _factorize(layer, row["rank"])
                new = factors if name == "" else _replace(new, name, factors)
                row |= {"compressed": True, "reason": f"rank {row['rank']} of {min(row['matrix'])}: factorized"}
            else:
                out, fan_in = row["matrix"]
                why_not = why_not or (
                    f"rank {row['rank']} of {min(out, fan_in)}: factors {row['rank'] * (out + fan_in)} "
                    f"≥ matrix {out * fan_in} parameters"
                )
                row |= {"params_after": row["params_before"], "flops_after": row["flops_before"], "reason": why_not}
            rows[id(layer.weight)] = row
    for pname, param in module.named_parameters():
        if param.dim() >= 2 and id(param) not in rows:
            rows[id(param)] = _parameter_row(pname, param, type(modules[pname.rpartition(".")[0]]).__name__, eps, norm)
    if input_shape is not None:
        _check_runs(new, input_shape)
    ordered = [rows[id(p)] for p in module.parameters() if id(p) in rows]  # the module's parameter order
    return new, pd.DataFrame(ordered, columns=LAYER_COLUMNS)


def _rank(matrix: torch.Tensor, eps: float, norm: str) -> int:
    """The ε-rank as the records define it (same singular values, same threshold)."""
    return int(eps_rank(singular_values(matrix.detach().flatten(1)), eps, norm))


def _layer_row(name: str, layer: nn.Linear | nn.Conv2d, eps: float, norm: str, positions: float) -> dict:
    """Rank, parameters and multiply-adds per sample of ``layer`` and of its rank-r factors
    (``r·(in·k1·k2 + out)`` weights; the bias is kept once)."""
    out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
    bias = layer.bias.numel() if layer.bias is not None else 0
    rank = _rank(layer.weight, eps, norm)
    return {
        "name": name, "kind": type(layer).__name__, "shape": tuple(layer.weight.shape), "rank": rank,
        "params_before": out * fan_in + bias, "params_after": rank * (fan_in + out) + bias,
        "flops_before": positions * out * fan_in, "flops_after": positions * rank * (fan_in + out),
        "compressed": False, "matrix": (out, fan_in),
    }


def _parameter_row(name: str, param: torch.Tensor, owner: str, eps: float, norm: str) -> dict:
    """A parameter of 2+ dimensions outside any Linear/Conv2d: listed, never compressed."""
    return {
        "name": name, "kind": owner, "shape": tuple(param.shape), "rank": _rank(param, eps, norm),
        "params_before": param.numel(), "params_after": param.numel(),
        "flops_before": math.nan, "flops_after": math.nan, "compressed": False,
        "reason": f"a parameter of {owner}, not the weight of an nn.Linear or nn.Conv2d: kept as it is",
    }


def _unsupported(name: str, layer: nn.Module, modules: dict[str, nn.Module], owners: dict[int, list[str]]):
    """Why this Linear/Conv2d cannot be replaced by two layers (a string), or None if it can."""
    if type(layer) not in (nn.Linear, nn.Conv2d):
        base = "nn.Linear" if isinstance(layer, nn.Linear) else "nn.Conv2d"
        return f"{type(layer).__name__} subclasses {base}; its forward may use the weight differently: kept as it is"
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return f"grouped convolution (groups={layer.groups}): not supported, kept as it is"
    parent_name = name.rpartition(".")[0]
    parent = modules[parent_name]
    if parent is not layer and not isinstance(parent, CONTAINERS) and type(parent).__module__.startswith("torch.nn."):
        return f"part of nn.{type(parent).__name__}, which reads its weights directly: kept as it is"
    shared = [n for n in owners[id(layer.weight)] if n != name]
    if shared:
        return f"weight shared with {shared[0]}: kept as it is"
    return None


class ConstantConv2d(nn.Module):
    """A ``Conv2d`` truncated to rank 0 (every singular value ≤ ε‖W‖): its bias (or zero) at
    every output position. PyTorch has no convolution to 0 channels, so this replaces the pair."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.out_channels = conv.out_channels
        self.geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride, padding, dilation = self.geometry
        size = x.shape[-2:]
        if padding != "same":  # "same" keeps the size (stride 1); "valid" is padding 0
            padding = (0, 0) if padding == "valid" else padding
            dims = zip(size, kernel, stride, padding, dilation)
            size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in dims]  # PyTorch's Conv2d formula
        value = self.bias if self.bias is not None else x.new_zeros(self.out_channels)
        return value.view(1, -1, 1, 1).expand(x.shape[0], -1, *size)


@torch.no_grad()
def _factorize(layer: nn.Linear | nn.Conv2d, rank: int) -> nn.Module:
    """The two layers of the truncated SVD of ``layer``'s weight matrix (balanced: Σ^½ each side)."""
    if rank == 0 and isinstance(layer, nn.Conv2d):
        return ConstantConv2d(layer).train(layer.training)
    weight = layer.weight.detach()
    u, s, vh = torch.linalg.svd(weight.flatten(1).double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = (root[:, None] * vh[:rank]).to(weight.dtype)  # (r, in·k1·k2)
    second = (u[:, :rank] * root).to(weight.dtype)  # (out, r)
    kw = {"device": weight.device, "dtype": weight.dtype}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):  # skip_init: no random initialization, the SVD factors are copied in
        with warnings.catch_warnings():  # rank 0: empty layers (zero-element tensors are fine here)
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            a = skip_init(nn.Linear, layer.in_features, rank, bias=False, **kw)
            b = skip_init(nn.Linear, rank, layer.out_features, bias=has_bias, **kw)
        a.weight.copy_(first)
        b.weight.copy_(second)
    else:
        a = skip_init(
            nn.Conv2d, layer.in_channels, rank, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode, **kw,
        )
        b = skip_init(nn.Conv2d, rank, layer.out_channels, 1, bias=has_bias, **kw)
        a.weight.copy_(first.view(rank, *weight.shape[1:]))
        b.weight.copy_(second.view(*second.shape, 1, 1))
    if has_bias:
        b.bias.copy_(layer.bias.detach())
    return nn.Sequential(a, b).train(layer.training)


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """``root`` with its submodule ``name`` replaced by ``new``."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, new)
    return root


def _parameter_owners(module: nn.Module) -> dict[int, list[str]]:
    """For each parameter (by identity), the names of every module holding it (tied weights)."""
    owners: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        for param in sub.parameters(recurse=False):
            owners.setdefault(id(param), []).append(name)
    return owners


@torch.no_grad()
def _positions(module: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Positions each Linear/Conv2d is applied to per sample (one forward pass with hooks):
    a convolution's output height × width, a linear layer's number of input vectors."""
    counts, hooks = {}, []

    def hook(name):
        def count(layer, inputs, out):  # conv: (N, C, H, W) → H·W; linear: (N, ..., out) → prod(...)
            channels = out.shape[1] if isinstance(layer, nn.Conv2d) else out.shape[-1]
            counts[name] = out.numel() // (out.shape[0] * channels)

        return count

    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            hooks.append(layer.register_forward_hook(hook(name)))
    try:
        _run_once(module, input_shape)
    finally:
        for h in hooks:
            h.remove()
    return counts


def _check_runs(module: nn.Module, input_shape: Sequence[int]) -> None:
    try:
        _run_once(module, input_shape)
    except Exception as exc:
        shape = tuple(input_shape)
        message = f"the compressed module fails on an input of shape {shape}: {type(exc).__name__}: {exc}"
        raise RuntimeError(message) from exc


@torch.no_grad()
def _run_once(module: nn.Module, input_shape: Sequence[int]) -> None:
    """One forward pass of two zero samples in eval mode (the module's mode is restored)."""
    param = next(module.parameters(), None)
    device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = module.training
    try:
        module.eval()
        module(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        module.train(was_training)
