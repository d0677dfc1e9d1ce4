"""Host-to-device copies inside a training step."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t``, drawn on the host during a step (dropout masks, augmentation parameters), on
    ``device`` without synchronizing the host with the GPU: a non-blocking copy from pinned
    memory (PyTorch's caching host allocator keeps the pinned block until the copy is done).
    A plain ``.to(device)`` from pageable memory waits for the GPU's queue to drain."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
