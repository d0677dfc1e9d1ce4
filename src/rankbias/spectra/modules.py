"""The weight matrices of any ``torch.nn.Module`` and their spectra (``rb.spectra``).

A weight matrix is what a layer multiplies its input patches by (GSGP Sec. 3):

- ``nn.Linear``: its weight ``(out, in)``; m_l = 1 on vectors, the number of tokens on sequences;
- a convolution: its kernel as ``(out, in·k1·k2)``; m_l = the number of output positions;
- ``nn.MultiheadAttention``: its packed in-projection as three matrices ``.q``, ``.k``, ``.v``
  (and its ``out_proj`` as a linear layer); m_l = the number of tokens;
- a transposed linear layer (Hugging Face's ``Conv1D`` of GPT-2: ``y = x W + b``, ``W`` of shape
  ``(in, out)``): ``Wᵀ``, a linear layer; an attention's packed ``c_attn`` (its module has
  ``split_size`` and the out features are 2 or 3 times it) as ``.q``, ``.k``, ``.v`` (``.k``, ``.v``
  for cross-attention) of kind ``attention``; m_l = the number of tokens.

m_l comes from one forward pass on a zero input of ``input_shape`` when it is given. Every other
parameter of two or more dimensions (an LSTM's gates, an embedding table, a free tensor such as
ViT's class token) is listed with ``analysed = False`` and the reason: nothing is dropped silently.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from .measures import DEFAULT_EPS, rank_measures, singular_values

COLUMNS = [
    "name", "member", "kind", "shape", "m_l", "analysed", "reason",
    "sv", "fro_norm", "spectral_norm", "eps_rank", "stable_rank", "effective_rank",
]


MATRIX_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)  # and is_transposed_linear


def weight_matrices(
    module: nn.Module,
) -> tuple[list[tuple[str, str, nn.Module, torch.Tensor]], list[tuple[str, tuple, str]]]:
    """``(matrices, skipped)``: matrices as (name, kind, layer, matrix); skipped as (name, shape, reason)."""
    matrices, covered = [], set()
    modules = dict(module.named_modules())
    for name, layer in modules.items():
        prefix = f"{name}." if name else ""
        if isinstance(layer, nn.Linear):
            # an attention's out_proj is called functionally: its m_l is its attention's
            kind = "attention" if isinstance(modules.get(name.rpartition(".")[0]), nn.MultiheadAttention) else "linear"
            matrices.append((name, kind, layer, layer.weight))
            covered.add(f"{prefix}weight")
        elif isinstance(layer, nn.modules.conv._ConvNd):
            matrices.append((name, "conv", layer, layer.weight.flatten(1)))
            covered.add(f"{prefix}weight")
        elif is_transposed_linear(layer):
            split = getattr(modules.get(name.rpartition(".")[0]), "split_size", None)
            matrix = layer.weight.T  # (out, in)
            if name.rpartition(".")[2] == "c_attn" and split and matrix.shape[0] in (2 * split, 3 * split):
                parts = "qkv" if matrix.shape[0] == 3 * split else "kv"
                for part, block in zip(parts, matrix.split(split)):
                    matrices.append((f"{prefix}{part}", "attention", layer, block))
            else:
                matrices.append((name, "linear", layer, matrix))
            covered.add(f"{prefix}weight")
        elif isinstance(layer, nn.MultiheadAttention):
            if layer.in_proj_weight is not None:
                for part, matrix in zip("qkv", layer.in_proj_weight.chunk(3)):
                    matrices.append((f"{prefix}{part}", "attention", layer, matrix))
                covered.add(f"{prefix}in_proj_weight")
            else:
                for part in "qkv":
                    matrices.append((f"{prefix}{part}", "attention", layer, getattr(layer, f"{part}_proj_weight")))
                    covered.add(f"{prefix}{part}_proj_weight")
    skipped = []
    for name, param in module.named_parameters():
        if param.dim() >= 2 and name not in covered:
            owner = modules.get(name.rpartition(".")[0], module)
            skipped.append((name, tuple(param.shape), _reason(owner, name)))
    return matrices, skipped


def is_transposed_linear(layer: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2 and its relatives): a linear layer whose weight is stored
    ``(in, out)``; recognized by name and shape, without importing transformers."""
    weight = getattr(layer, "weight", None)
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf") and weight is not None and weight.dim() == 2


def _reason(owner: nn.Module, name: str) -> str:
    kind = type(owner).__name__
    if isinstance(owner, nn.RNNBase):
        return f"{kind} weight: stacked recurrent gate matrices, applied over time steps; not analysed"
    if isinstance(owner, nn.Embedding | nn.EmbeddingBag):
        return f"{kind} table: rows are looked up, not a linear map of the input; not analysed"
    return f"a parameter of {kind} that is not a linear, convolution or attention weight; not analysed"


def module_spectra(
    module: nn.Module, eps: float = DEFAULT_EPS, norm: str = "fro", input_shape: tuple[int, ...] | None = None
) -> pd.DataFrame:
    """One row per weight matrix of ``module`` (and one per skipped parameter); see the module doc."""
    matrices, skipped = weight_matrices(module)
    patches = patch_counts(module, input_shape) if input_shape is not None else {}
    rows = []
    for name, kind, layer, matrix in matrices:
        layer_name = name.rpartition(".")[0] if kind == "attention" else name
        m_l = patches.get(layer_name, 1 if kind == "linear" else float("nan"))
        sv = singular_values(matrix.detach())
        values = {k: float(v) for k, v in rank_measures(sv, eps, norm).items()}
        rows.append({"name": name, "member": 0, "kind": kind, "shape": tuple(matrix.shape), "m_l": m_l,
                     "analysed": True, "reason": None, "sv": sv.cpu().numpy(), **values})
    for name, shape, reason in skipped:
        rows.append({"name": name, "member": 0, "kind": "skipped", "shape": shape, "m_l": float("nan"),
                     "analysed": False, "reason": reason})
    return pd.DataFrame(rows, columns=COLUMNS)


def patch_counts(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """m_l of each layer from one forward pass on a zero input (forward hooks)."""
    counts, hooks = {}, []

    def record(name, layer, output):
        if isinstance(layer, nn.MultiheadAttention):
            counts[name] = output[0].shape[1] if layer.batch_first else output[0].shape[0]
        elif isinstance(layer, nn.Linear) or is_transposed_linear(layer):
            counts[name] = math.prod(output.shape[1:-1])
        else:
            counts[name] = math.prod(output.shape[2:])

    for name, layer in module.named_modules():
        if isinstance(layer, MATRIX_LAYERS) or is_transposed_linear(layer):
            hooks.append(layer.register_forward_hook(lambda layer, i, o, name=name: record(name, layer, o)))
    param = next(module.parameters(), None)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu"))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return counts
