"""SGD with momentum and weight decay, each cohort member with its own hyperparameters.

The update is PyTorch's ``torch.optim.SGD`` (dampening 0), per member r::

    g   = grad + weight_decay_r * W            # the papers' ∇L + 2λW with λ = weight_decay / 2
    buf = momentum_r * buf + g                 # buf starts at 0, so the first step has buf = g
    d   = g + momentum_r * buf  if nesterov_r else buf
    W  -= lr_r * d

``lr`` is set every epoch from the member's schedule (:meth:`set_lr`).

**Fused update** (:meth:`fuse`): a layer whose weight gradient is a batched product
``G = gᵀx`` (``CohortLinear``) may apply the update above inside its backward, after it has
computed its input gradient with the old ``W``, without ever materializing ``G``; per member::

    plain SGD   W ← W − lr·wd·W + (−lr·g)ᵀx                     one baddbmm_, −lr folded into g
    momentum    buf ← m·buf + wd·W + gᵀx                          baddbmm_ into the buffer
                W ← W − lr·ν·wd·W − lr·(1 − ν + ν·m)·buf + (−lr·ν·g)ᵀx     ν = 1 for Nesterov

which is the update above rearranged (for Nesterov d = G + wd·W + m·buf). The momentum buffers
stay in :attr:`buffers` (the engine checkpoints them), the hyperparameters in this object, so
:meth:`set_lr` and :meth:`select` apply to the fused weights too. :meth:`step` updates every
other parameter, and a fused weight whose layer did not run the fused backward from its
``.grad`` as before. A fused layer's backward *is* its optimizer step: call ``backward`` once
per :meth:`step` (no gradient accumulation, no gradient inspection of fused weights).

:attr:`version` counts the changes of the per-member factors (:meth:`set_lr` with new values,
:meth:`select`): a CUDA graph that captured :meth:`step` holds the factors' tensors of its
version and must be captured again after a change.
"""

from __future__ import annotations

import functools

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
        self.use_decay = bool((self.weight_decay != 0).any())  # False: the decay terms are skipped
        self.use_nesterov = bool((self.nesterov > 0).any())
        self.buffers = [torch.zeros_like(p) for p in self.params] if self.use_momentum else []
        self._shaped: dict[int, tuple[torch.Tensor, ...]] = {}
        self._fused_factors: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}
        self._fused_done: set[int] = set()  # fused weights already updated in this step's backward
        self.version = 0

    def set_lr(self, lr) -> None:
        lr = torch.as_tensor(lr, dtype=torch.float32)
        if torch.equal(lr, self.lr.cpu()):
            return
        self.lr.copy_(lr)
        self._changed()

    def _changed(self) -> None:
        self._shaped.clear()
        self._fused_factors.clear()
        self.version += 1

    def fuse(self, modules) -> int:
        """Let every module in ``modules`` with a ``fused_step`` attribute (``CohortLinear``) whose
        weight is one of this optimizer's parameters update that weight in its backward
        (see the module docstring). Returns the number of fused weights."""
        index = {id(p): i for i, p in enumerate(self.params)}
        fused = 0
        for module in modules:
            if hasattr(module, "fused_step") and id(module.weight) in index:
                module.fused_step = functools.partial(self._fused_outer_step, index[id(module.weight)])
                fused += 1
        return fused

    def _fused_factor_values(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Per member, shaped ``(R, 1, 1)``, in the parameter's dtype: (−lr·ν·wd or −lr·wd without
        momentum, momentum, weight decay, −lr·buf_coef, −lr·ν or −lr without momentum)."""
        if dtype not in self._fused_factors:
            hyperparameters = (self.lr, self.weight_decay, self.momentum, self.nesterov)
            lr, wd, mom, nesterov = (v.to(dtype).view(-1, 1, 1) for v in hyperparameters)
            if not self.use_momentum:
                factors = (-lr * wd, mom, wd, None, -lr)
            else:
                buf_coef = 1 - nesterov + nesterov * mom
                factors = (-lr * nesterov * wd, mom, wd, -lr * buf_coef, -lr * nesterov)
            self._fused_factors[dtype] = factors
        return self._fused_factors[dtype]

    def _fused_outer_step(self, i: int, g: torch.Tensor, x: torch.Tensor) -> None:
        """Update parameter ``i`` (``(R, out, in)``) whose gradient is ``gᵀx`` for g ``(R, N, out)``,
        x ``(R, N, in)``, without forming the gradient (module docstring). Called from inside the
        autograd backward, where gradients are not recorded (no ``torch.no_grad`` needed: its
        context costs ~4 % of a single run's step)."""
        p = self.params[i]
        decay, mom, wd, buf_scale, g_scale = self._fused_factor_values(p.dtype)
        if self.use_momentum:
            buf = self.buffers[i].mul_(mom)
            if self.use_decay:
                buf.addcmul_(p, wd)
            buf.baddbmm_(g.transpose(1, 2), x)
            if self.use_nesterov:
                if self.use_decay:
                    p.addcmul_(p, decay)
                p.baddbmm_((g * g_scale).transpose(1, 2), x)
            p.addcmul_(buf, buf_scale)
        else:
            if self.use_decay:
                p.addcmul_(p, decay)
            p.baddbmm_((g * g_scale).transpose(1, 2), x)
        self._fused_done.add(i)

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
        """The update of every parameter not fused (module docstring), as ``torch._foreach_*``
        ops over all of them: one call per term instead of one per parameter."""
        todo = [i for i in range(len(self.params)) if i not in self._fused_done]
        self._fused_done.clear()
        if not todo:
            return
        params = [self.params[i] for i in todo]
        grads = [p.grad for p in params]
        neg_lr, wd, mom, nesterov, buf_coef = zip(*(self._per_member(p.dim()) for p in params))
        if self.use_decay:
            torch._foreach_addcmul_(grads, params, wd)  # in place: the gradients are dropped below
        step = grads
        if self.use_momentum:
            bufs = [self.buffers[i] for i in todo]
            torch._foreach_mul_(bufs, mom)
            torch._foreach_add_(bufs, grads)
            step = bufs
            if self.use_nesterov:  # nesterov members: g + momentum*buf; the others: buf
                torch._foreach_mul_(grads, nesterov)
                torch._foreach_addcmul_(grads, bufs, buf_coef)
                step = grads
        torch._foreach_addcmul_(params, step, neg_lr)
        for p in params:
            p.grad = None

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members in index tensor ``keep`` (after ``CohortModel`` was sliced)."""
        self.lr, self.momentum = self.lr[keep], self.momentum[keep]
        self.weight_decay, self.nesterov = self.weight_decay[keep], self.nesterov[keep]
        self.buffers = [b[keep] for b in self.buffers]
        self._changed()
