"""One training step captured in a CUDA graph and replayed (the GPU path).

A cohort step launches hundreds of small kernels; on a GPU their launch costs more than their
work. :class:`GraphedStep` records the step once (``torch.cuda.graph``) and replays it, the
inputs copied into the captured step's static index tensor. It follows PyTorch's recipe for
capturing a whole network (``torch.cuda.graphs`` documentation): a few eager steps on a side
stream first, then capture; the autograd backward, the fused update in it and
``CohortSGD.step`` are all inside the graph, their gradients in the graph's private memory.

What a replay may not change is the engine's business: the step must draw no random numbers
on the host (no dropout, no augmentation), and the graph is dropped and captured again when the
batch shape, the members or the optimizer's factors (:attr:`CohortSGD.version`) change.
A step whose shape differs from the captured one (the epoch's last, partial batch) runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before the capture (PyTorch's recipe)


class GraphedStep:
    """``step(index) -> losses`` replayed from a CUDA graph; ``key``: what the captured graph
    depends on besides the index's shape (a capture is redone when it changes)."""

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], warmup: int = WARMUP_STEPS):
        self.step, self.warmup = step, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key = None
        self.index: torch.Tensor | None = None  # the captured step's input, (R·B,) sample indices
        self.losses: torch.Tensor | None = None  # its output, (R,)
        self.eager_steps = 0
        self.captures = 0

    def __call__(self, index: torch.Tensor, key) -> torch.Tensor:
        if self.graph is not None and (key != self.key or index.shape != self.index.shape):
            if key == self.key:  # a different batch shape: this step eagerly, the graph kept
                return self.step(index)
            self.graph = None
        if self.graph is None:
            if self.eager_steps < self.warmup:
                self.eager_steps += 1
                return self._on_side_stream(index)
            self._capture(index, key)
        else:
            self.index.copy_(index)
        self.graph.replay()
        return self.losses

    def _on_side_stream(self, index: torch.Tensor) -> torch.Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            losses = self.step(index)
        torch.cuda.current_stream().wait_stream(side)
        return losses

    def _capture(self, index: torch.Tensor, key) -> None:
        self.index, self.key = index.clone(), key
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.losses = self.step(self.index)
        self.captures += 1
