"""Weight matrices of any module, their per-sample and batch gradients, and their ranks.

GSGP Lemma 3.1 / GP Lemma 1: for one sample x, ``∂ℓ(f_W(x))/∂W`` has rank ≤ m_l, the number of
positions the matrix is applied to: 1 for a fully connected layer on a vector, the number of
patches (output height × width) for a convolution (weight as the ``(out, in·k·k)`` matrix), the
number of tokens for a linear map applied per token and for attention projections. GP Lemma 2:
with batch normalization in training mode the samples of a batch are coupled, and any
combination ``Σ_j β_j ∂f(x_j; X̃)/∂W`` has rank ≤ B (≤ m_l·B for a convolution); in particular
the batch gradient does.

The matrices and their m_l are those of ``rb.spectra`` (:mod:`rankbias.spectra.modules`: one
forward pass with hooks), so the check works for any ``nn.Module`` built from ``nn.Linear``,
``nn.Conv*d`` and ``nn.MultiheadAttention`` (packed in-projections split into q, k, v).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import ConfigError
from ..options import resolve_device
from ..training.losses import member_losses
from ._common import table


@dataclass(frozen=True)
class WeightMatrix:
    """One weight matrix of a module, as :func:`rankbias.spectra.modules.weight_matrices` lists
    it (the same names as ``rb.spectra``: module path, ``<attention>.q|k|v``): ``param`` is the
    parameter it lives in, ``part`` its third of a packed attention in-projection (else None),
    ``shape`` its shape as a matrix, ``m_l`` its positions per sample (None when the module was
    not called in the forward pass), ``kind`` (``linear``, ``conv``, ``attention``)."""

    name: str
    param: str
    shape: tuple[int, int]
    m_l: int | None
    kind: str
    groups: int = 1
    part: int | None = None

    @property
    def bound(self) -> int | None:
        """GSGP Lemma 3.1's bound on a per-sample gradient's rank (groups of a grouped
        convolution each contribute up to m_l)."""
        return None if self.m_l is None else self.m_l * self.groups


def weight_matrices(module: nn.Module, sample: torch.Tensor) -> list[WeightMatrix]:
    """Every weight matrix of ``module`` with its m_l, from one forward pass of an input shaped
    like ``sample`` (one input, without the batch dimension; forward hooks, eval mode)."""
    from ..spectra.modules import patch_counts
    from ..spectra.modules import weight_matrices as module_matrices

    matrices, _ = module_matrices(module)
    patches = patch_counts(module, tuple(sample.shape))
    out = []
    for name, kind, layer, matrix in matrices:
        prefix = name.rpartition(".")[0]
        if isinstance(layer, nn.MultiheadAttention):  # .q / .k / .v of the attention ``layer``
            letter = name.rpartition(".")[2]
            packed = layer.in_proj_weight is not None
            param = f"{prefix}.in_proj_weight" if packed else f"{prefix}.{letter}_proj_weight"
            part = "qkv".index(letter) if packed else None
            m_l = patches.get(prefix)
        else:  # a Linear (an attention's out_proj takes its attention's m_l) or a convolution
            param, part = (f"{name}.weight" if name else "weight"), None
            m_l = patches.get(prefix if kind == "attention" else name)
        param = param.removeprefix(".")
        groups = getattr(layer, "groups", 1) if kind == "conv" else 1
        out.append(WeightMatrix(name, param, tuple(matrix.shape), m_l, kind, groups, part))
    return out


def as_matrix(w: WeightMatrix, tensor: torch.Tensor, batched: bool = False) -> torch.Tensor:
    """A weight or gradient of ``w``'s parameter as ``w``'s matrix; ``batched``: a stack
    ``(S, *param shape)``. A convolution's ``(out, in, k1, k2)`` becomes ``(out, in·k1·k2)``
    (GSGP Sec. 2); a packed attention in-projection gives its q, k or v third."""
    if w.kind == "conv":
        return tensor.flatten(2) if batched else tensor.flatten(1)
    if w.part is not None:
        return tensor.chunk(3, dim=-2)[w.part]
    return tensor


def numerical_rank(matrices: torch.Tensor, rtol: float | None = None) -> tuple[np.ndarray, float]:
    """Ranks of a stack ``(S, m, n)``: singular values above ``rtol · σ_max`` of each matrix.

    Default ``rtol``: ``max(m, n) · machine epsilon`` of the dtype (NumPy's ``matrix_rank``).
    Returns the ranks and the relative tolerance used.
    """
    if rtol is None:
        rtol = max(matrices.shape[-2:]) * torch.finfo(matrices.dtype).eps
    sv = torch.linalg.svdvals(matrices)
    ranks = (sv > rtol * sv[..., :1]).sum(-1)
    return ranks.cpu().numpy(), float(rtol)


def per_sample_gradients(
    module: nn.Module, weights: list[WeightMatrix], x: torch.Tensor, y: torch.Tensor, loss: str, chunk: int = 16
) -> dict[str, torch.Tensor]:
    """``∂ℓ(f(x_i), y_i)/∂W`` for every sample i and weight matrix, in eval mode (batch norm uses
    its running statistics, so samples do not interact): ``{name: (S, out, in)}``.

    ``torch.func``: ``vmap`` over the samples of ``grad`` of the one-sample loss.
    """
    module = module.eval()
    state = {k: v.detach() for k, v in (*module.named_parameters(), *module.named_buffers())}
    names = sorted({w.param for w in weights})

    def sample_loss(params, xi, yi):
        out = functional_call(module, {**state, **params}, (xi.unsqueeze(0),))
        return member_losses(loss, out.unsqueeze(0), yi.reshape(1, 1))[0]

    # vmap falls back to a loop for some kernels (attention on CPU): slower, same values
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk)({n: state[n] for n in names}, x, y)
    return {w.name: as_matrix(w, grads[w.param], batched=True) for w in weights}


def batch_gradient(
    module: nn.Module,
    weights: list[WeightMatrix],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    weight_decay: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The gradient of the batch's mean loss plus ``(weight_decay/2)·‖W‖²`` (the papers'
    ``L^λ`` with λ = weight_decay/2, so the gradient is ``∇L + weight_decay·W``), in training
    mode (batch norm uses the batch's statistics, as in SGD). ``module`` is not changed: the
    forward runs on a copy, so running statistics stay as they were."""
    module = copy.deepcopy(module).train()
    params = dict(module.named_parameters())
    names = sorted({w.param for w in weights})
    out = module(x)
    value = member_losses(loss, out.unsqueeze(0), y.unsqueeze(0))[0]
    grads = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
    full = {
        n: (torch.zeros_like(params[n]) if g is None else g) + weight_decay * params[n].detach()
        for n, g in zip(names, grads)
    }
    return {w.name: as_matrix(w, full[w.param]) for w in weights}


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def gradient_rank(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    *,
    batch_size: int | None = None,
    rtol: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    run_id: str | None = None,
    epoch: int | None = None,
) -> pd.DataFrame:
    """Ranks of per-sample gradients against GSGP Lemma 3.1 / GP Lemma 1, and, when the module
    has batch norm, of batch gradients in training mode against GP Lemma 2.

    - ``gsgp_lemma_3_1``: for each weight matrix, the largest numerical rank of
      ``∂ℓ(f(x_i))/∂W`` over the samples (eval mode) against m_l (1 for a fully connected layer,
      the patches of a convolution, the tokens of an attention projection).
    - ``gp_lemma_2`` (batch-norm modules only): the samples split into batches of
      ``batch_size`` (default: all in one), the largest rank of a batch's gradient in training
      mode against m_l·B.

    Computed in ``dtype`` (float64 by default, on a copy of the module) so that the numerical
    rank is clean; ``rtol`` is the relative tolerance (default ``max(m, n)·eps``, stated in the
    ``rtol`` column), on ``device`` (``"auto"``: CUDA when available). ``note`` gives the
    distribution of the per-sample ranks.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError("y", f"need as many labels as samples, at least one: got {len(x)} and {len(y)}")
    device = resolve_device(device)
    weights = weight_matrices(module, x[0])
    module = copy.deepcopy(module).to(device, dtype)
    x = x.to(device, dtype)
    y = y.to(device, dtype) if y.is_floating_point() else y.to(device)
    rows = []
    used = [w for w in weights if w.m_l is not None]
    grads = per_sample_gradients(module, used, x, y, loss) if used else {}
    for w in weights:
        row = {"check": "gsgp_lemma_3_1", "run_id": run_id, "layer": w.name, "epoch": epoch,
               "param": f"{len(x)} samples", "rows": w.shape[0], "cols": w.shape[1], "m_l": w.m_l, "kind": w.kind}
        if w.m_l is None:
            rows.append(row | {"note": "not called in the forward pass: no gradient to check"})
            continue
        ranks, tol = numerical_rank(grads[w.name], rtol)
        values, counts = np.unique(ranks, return_counts=True)
        spread = ", ".join(f"rank {v}: {c}" for v, c in zip(values, counts))
        rows.append(row | _rank_row(int(ranks.max()), w.bound, w.shape, tol, f"per-sample ranks ({spread})"))
    if has_batch_norm(module):
        size = batch_size or len(x)
        starts = range(0, len(x) - size + 1, size)
        batch_grads = [batch_gradient(module, used, x[s : s + size], y[s : s + size], loss) for s in starts]
        for w in used:
            ranks, tol = numerical_rank(torch.stack([g[w.name] for g in batch_grads]), rtol)
            rows.append({"check": "gp_lemma_2", "run_id": run_id, "layer": w.name, "epoch": epoch, "param": f"B={size}",
                         "rows": w.shape[0], "cols": w.shape[1], "m_l": w.m_l, "kind": w.kind}
                        | _rank_row(int(ranks.max()), w.bound * size, w.shape, tol,
                                    f"batch norm in training mode couples the samples; {len(batch_grads)} batch(es)"))
    return table(rows)


def _rank_row(rank: int, bound: int, shape: tuple[int, int], tol: float, note: str) -> dict:
    trivial = bound >= min(shape)
    if trivial:
        note += f"; trivial: bound {bound} ≥ the smaller dimension {min(shape)}"
    if rank > bound:
        note += f"; VIOLATED: rank {rank} > {bound}"
    return {"measured": rank, "bound": bound, "holds": rank <= bound, "trivial": trivial, "rtol": tol, "note": note}
