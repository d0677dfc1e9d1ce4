"""What every cohort model provides to the engine and to the spectra."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MatrixInfo:
    """One weight matrix of a model.

    ``name``: its module path (the same in the cohort model and in a member's plain module).
    ``m_l``: the number of patches it is applied to (1 for a fully connected layer; output
    height × width for a convolution; GSGP Lemma 3.1). ``classifier``: the final layer, left out
    of the default average rank.
    """

    name: str
    shape: tuple[int, int]
    m_l: int = 1
    classifier: bool = False


class CohortModel(nn.Module):
    """``R`` networks of one architecture, parameters stacked on dim 0 (see ``layers.py``).

    Subclasses build their layers, list their weight matrices in ``matrix_infos`` and map a
    member to a plain ``nn.Module`` in ``member_module``.
    """

    members: int

    def matrix_infos(self) -> list[MatrixInfo]:
        raise NotImplementedError

    def weight_matrix(self, name: str) -> torch.Tensor:
        """The stacked ``(R, out, in)`` matrix of a listed weight matrix."""
        return self.get_submodule(name).matrix

    def reset_member(self, r: int, generator: torch.Generator) -> None:
        """Initialize member ``r`` from its own generator, layer by layer in module order."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_member"):
                module.reset_member(r, generator)

    def member_module(self, r: int) -> nn.Module:
        """Member ``r`` as a plain PyTorch module (its own copy of the weights)."""
        raise NotImplementedError
