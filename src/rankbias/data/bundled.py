"""Data sets without files: scikit-learn's bundled ``digits`` and the generated ``synthetic`` set.

``digits``: :func:`sklearn.datasets.load_digits`, 1797 grey 8x8 images of handwritten digits with
pixel values 0..16, shipped inside scikit-learn (no download). One pool; the caller splits it.

``synthetic``: inputs x ~ N(0, I_dim); a fixed random teacher f(x) = W2 relu(W1 x) with
``teacher_width`` hidden units and ``max(classes, 1)`` outputs gives the targets: the argmax of
f(x) when ``classes > 0``, else f(x) + noise * N(0, 1) (``noise`` is not used for classes).
The teacher depends only on (dim, teacher_width, outputs), not on the subset seed: like a real
data set, the task stays the same and ``subset_seed`` only redraws the samples. Rows of W1 have
unit norm; rows of W2 sum to zero (so every output has mean zero and the classes are balanced in
expectation) and are scaled so that each output has variance about 1. Training and test inputs
come from separate seeded streams: the test set does not change with ``train_size``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

DIGITS_SIZE = 1797
_TEACHER, _TRAIN, _TEST = 0x7EAC, 0x7A1, 0x7E57  # stream tags for seeding


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 1, 8, 8) float32 with values 0..16 and labels (1797,) int64 (read-only)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def synthetic(config, n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)`` for a :class:`~rankbias.config.SyntheticConfig`.

    Inputs are float32 (N, dim); labels int64 (classes > 0) or float32 targets (classes == 0).
    """
    w1, w2 = _teacher(config.dim, config.teacher_width, max(config.classes, 1))
    out = []
    for n, tag in ((n_train, _TRAIN), (n_test, _TEST)):
        g = _generator(tag, seed)
        x = torch.randn(n, config.dim, generator=g)
        f = torch.relu(x @ w1.T) @ w2.T
        if config.classes > 0:
            y = f.argmax(dim=1)
        else:
            y = f[:, 0] + config.noise * torch.randn(n, generator=g)
        out += [x, y]
    return tuple(out)


def _teacher(dim: int, width: int, outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _generator(_TEACHER, dim, width, outputs)
    w1 = torch.randn(width, dim, generator=g)
    w1 /= w1.norm(dim=1, keepdim=True)
    w2 = torch.randn(outputs, width, generator=g)
    if width > 1:
        w2 -= w2.mean(dim=1, keepdim=True)
    # relu of a standard normal has variance (pi - 1) / (2 pi); unit-norm rows of W2 then give
    # outputs of variance about that, for nearly independent hidden units.
    w2 *= math.sqrt(2 * math.pi / (math.pi - 1)) / w2.norm(dim=1, keepdim=True)
    return w1, w2


def _generator(*words: int) -> torch.Generator:
    """A torch generator seeded from a tuple of integers (any sign), via numpy's SeedSequence."""
    entropy = [w % 2**64 for w in words]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
