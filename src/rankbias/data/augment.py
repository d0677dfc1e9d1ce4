"""Augmentation of training images on tensors, batched, on the training device.

Each member of a cohort draws its own random parameters from its own generator (on the CPU, in a
fixed order: crop offsets, flips, angles), so a member sees the same augmented images in a cohort
as alone. The images of all members are then transformed together:

- random crop with zero padding p: pad by p, take the H×W window at offsets uniform in {0, …, 2p};
- horizontal flip with probability 1/2;
- rotation about the centre (bilinear, zeros outside), by an angle uniform in ±rotate
  (``uniform``, the authors' code) or by rotate·k, k uniform in {1, …, ⌊360/rotate⌋}
  (``steps``, GSGP App. B.1's 15k degrees).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.layers import to_device


def augment(x: torch.Tensor, generators: list[torch.Generator], config) -> torch.Tensor:
    """``x``: the members' batches ``(R, B, C, H, W)``; ``config``: an ``AugmentConfig``."""
    members, batch, channels, height, width = x.shape
    draws = [_draw(g, batch, config) for g in generators]
    flat = x.flatten(0, 1)  # (R·B, C, H, W)
    if config.crop:
        offsets = to_device(torch.cat([d["offsets"] for d in draws]), x.device)  # (R·B, 2)
        flat = _crop(flat, offsets, config.crop)
    if config.flip:
        flips = to_device(torch.cat([d["flips"] for d in draws]), x.device)  # (R·B,)
        flat = torch.where(flips[:, None, None, None], flat.flip(-1), flat)
    if config.rotate:
        angles = to_device(torch.cat([d["angles"] for d in draws]), x.device)  # (R·B,) degrees
        flat = rotate(flat, angles)
    return flat.view(members, batch, channels, height, width)


def _draw(generator: torch.Generator, batch: int, config) -> dict:
    out = {}
    if config.crop:
        out["offsets"] = torch.randint(0, 2 * config.crop + 1, (batch, 2), generator=generator)
    if config.flip:
        out["flips"] = torch.rand(batch, generator=generator) < 0.5
    if config.rotate:
        if config.rotate_mode == "uniform":
            out["angles"] = (torch.rand(batch, generator=generator) * 2 - 1) * config.rotate
        else:
            steps = int(360 // config.rotate)
            out["angles"] = torch.randint(1, steps + 1, (batch,), generator=generator).float() * config.rotate
    return out


def _crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """The H×W window of the zero-padded images at per-image offsets ``(dy, dx)``."""
    n, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(height, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(width, device=x.device)  # (N, W)
    index = torch.arange(n, device=x.device)[:, None, None]
    return padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle about its centre."""
    theta = degrees.to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates (x right, y down): this is a counter-clockwise turn on screen
    matrix = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
