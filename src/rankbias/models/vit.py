"""A small vision transformer (Dosovitskiy et al. 2021), as GSGP App. B.1 describes it.

4×4 patches embedded by a linear map (a 4×4 convolution of stride 4), a class token and learned
position embeddings, 6 pre-norm blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` with 8 heads, each
block's MLP two fully connected layers with GELU and dropout 0.1 between them; then LayerNorm and a
linear classifier on the class token. Defaults: ``model.width`` (embedding size) 512,
``model.mlp_dim`` 512, ``model.dropout`` 0.1 — the common CIFAR-10 ViT of this size.

Weight matrices: each block's query, key, value and output projections and its two MLP matrices
(36 for 6 blocks), each applied to every token (m_l = number of tokens); the patch embedding
(rank ≤ 3·4·4 = 48 by its shape) and the classifier are recorded but not counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import activation
from .registry import register

PATCH, HEADS, DEPTH = 4, 8, 6


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v, o projections (each a weight matrix).

    The head count comes from the input's width, ``x.shape[-1] // head_dim``: in a cohort the
    members' heads are simply more heads (``layers.py``), so this code serves both.
    """

    def __init__(self, layers, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError("model.width", f"{dim} is not divisible by the {heads} attention heads")
        self.head_dim = dim // heads
        self.q, self.k, self.v, self.o = (layers.linear(dim, dim, True) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def heads(t):  # (B, T, heads·hd) -> (B, heads, T, hd)
            return t.view(batch, tokens, -1, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    def __init__(self, layers, dim: int, mlp_dim: int, dropout: float, act: str):
        super().__init__()
        self.norm1, self.attn = layers.layernorm(dim), Attention(layers, dim, HEADS)
        self.norm2 = layers.layernorm(dim)
        self.fc1, self.act = layers.linear(dim, mlp_dim, True), activation(act)
        self.drop, self.fc2 = layers.dropout(dropout), layers.linear(mlp_dim, dim, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm2(x)))))


class ViT(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out):
        super().__init__()
        channels, height, width = input_shape
        if height % PATCH or width % PATCH:
            raise ConfigError(
                "model.name",
                f"vit needs image sides divisible by {PATCH}, got {height}×{width} (see data.pad / data.resize)",
            )
        dim, tokens = spec.width, (height // PATCH) * (width // PATCH) + 1
        self.patch_embed = layers.conv2d(channels, dim, PATCH, stride=PATCH, bias=True)
        self.cls_token, self.pos_embed = layers.parameter(1, 1, dim), layers.parameter(1, tokens, dim)
        self.blocks = nn.Sequential(
            *(Block(layers, dim, spec.mlp_dim or dim, spec.dropout, spec.activation) for _ in range(DEPTH))
        )
        self.norm, self.head = layers.layernorm(dim), layers.linear(dim, n_out, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T-1, D)
        x = torch.cat([self.cls_token().expand(len(x), -1, -1), x], dim=1) + self.pos_embed()  # (B, T, D)
        return self.head(self.norm(self.blocks(x))[:, 0])


@register(
    "vit", "Dosovitskiy et al. 2021; GSGP App. B.1",
    uncounted=("patch_embed",), classifier="head", loop_on_cpu=True,
    width=512, mlp_dim=None, dropout=0.1, activation="gelu",
)
def vit(layers, spec, input_shape, n_out):
    """ViT: 4×4 patches, 6 pre-norm blocks of 8 heads, MLP Linear→GELU→Dropout(0.1)→Linear."""
    return ViT(layers, spec, input_shape, n_out)
