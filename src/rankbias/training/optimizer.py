"""SGD with momentum and weight decay, each cohort member with its own hyperparameters.

The update is PyTorch's ``torch.optim.SGD`` (dampening 0), per member r::

    g   = grad + weight_decay_r * W            # the papers' ∇L + 2λW with λ = weight_decay / 2
    buf = momentum_r * buf + g                 # buf starts at 0, so the first step has buf = g
    d   = g + momentum_r * buf  if nesterov_r else buf
    W  -= lr_r * d

``lr`` is set every epoch from the member's schedule (:meth:`set_lr`).
"""

from __future__ import annotations

import torch


class CohortSGD:
    def __init__(self, params: list[torch.Tensor], lr, momentum, weight_decay, nesterov):
        self.params = list(params)
        device = self.params[0].device
        as_vec = lambda values: torch.as_tensor(values, dtype=torch.float32, device=device)
        self.lr = as_vec(lr)
        self.momentum = as_vec(momentum)
        self.weight_decay = as_vec(weight_decay)
        self.nesterov = as_vec([float(v) for v in nesterov])
        self.use_momentum = bool((self.momentum > 0).any())
        self.use_nesterov = bool((self.nesterov > 0).any())
        self.buffers = [torch.zeros_like(p) for p in self.params] if self.use_momentum else []
        self._shaped: dict[int, tuple[torch.Tensor, ...]] = {}

    def set_lr(self, lr) -> None:
        self.lr.copy_(torch.as_tensor(lr, dtype=torch.float32))
        self._shaped.clear()

    def _per_member(self, ndim: int) -> tuple[torch.Tensor, ...]:
        """Per-member factors, shaped to broadcast over a parameter of ``ndim`` dimensions:
        (-lr, weight_decay, momentum, nesterov flag, coefficient of buf in the nesterov update)."""
        if ndim not in self._shaped:
            shape = (-1,) + (1,) * (ndim - 1)
            buf_coef = 1 - self.nesterov + self.nesterov * self.momentum
            factors = (-self.lr, self.weight_decay, self.momentum, self.nesterov, buf_coef)
            self._shaped[ndim] = tuple(v.view(shape) for v in factors)
        return self._shaped[ndim]

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            neg_lr, wd, mom, nesterov, buf_coef = self._per_member(p.dim())
            g = p.grad.addcmul_(p, wd)  # in place: the gradient is dropped after the step
            if self.use_momentum:
                buf = self.buffers[i].mul_(mom).add_(g)
                # nesterov members: g + momentum*buf; the others: buf
                g = g.mul_(nesterov).addcmul_(buf, buf_coef) if self.use_nesterov else buf
            p.addcmul_(g, neg_lr)
            p.grad = None

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members in index tensor ``keep`` (after ``CohortModel`` was sliced)."""
        self.lr, self.momentum = self.lr[keep], self.momentum[keep]
        self.weight_decay, self.nesterov = self.weight_decay[keep], self.nesterov[keep]
        self.buffers = [b[keep] for b in self.buffers]
        self._shaped.clear()
