"""Per-member losses and accuracies on cohort outputs ``(R, B, outputs)``.

- ``cross_entropy``: on logits, mean over the batch.
- ``mse_onehot``: squared error against one-hot labels, mean over batch and outputs (nn.MSELoss).
- ``mse_scalar``: squared error of a single output against a scalar target (CHEN: regression on
  the label value, or on a real target); accuracy rounds the prediction to the nearest class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_size(loss: str, num_classes: int) -> int:
    return 1 if loss == "mse_scalar" else num_classes


def member_losses(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One loss per member: shape (R,)."""
    if loss == "mse_onehot":  # nn.MSELoss: one mean over batch and outputs
        return _squared_errors(out, y).mean((1, 2))
    return sample_losses(loss, out, y).mean(1)


def sample_losses(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One loss per member and sample: shape (R, B) (``mse_onehot``: the mean over outputs)."""
    members, batch = out.shape[:2]
    if loss == "cross_entropy":
        return F.cross_entropy(out.reshape(members * batch, -1), y.reshape(-1), reduction="none").view(members, batch)
    if loss == "mse_onehot":
        return _squared_errors(out, y).mean(2)
    return (out[..., 0] - y.to(out.dtype)).square()


def _squared_errors(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Against one-hot labels: (R, B, outputs)."""
    return (out - F.one_hot(y, out.shape[-1]).to(out.dtype)).square()


def member_correct(loss: str, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Number of correct predictions per member (R,); NaN for regression without classes."""
    if num_classes == 0:
        return torch.full(out.shape[:1], float("nan"), device=out.device)
    if loss == "mse_scalar":
        predicted = out[..., 0].round().clamp(0, num_classes - 1).long()
    else:
        predicted = out.argmax(-1)
    return (predicted == y).sum(1).float()
