"""A cohort of ``R`` networks of one architecture, and what it tells the engine and the spectra."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from .layers import PLAIN, CohortConv2d, CohortDropout, CohortLayers, CohortLinear, Dropout
from .registry import FAMILIES, ModelSpec, is_counted


@dataclass(frozen=True)
class MatrixInfo:
    """One weight matrix of a model.

    ``name``: its module path (the same in the cohort and in a member's plain module).
    ``shape``: ``(out, in)``; a convolution's kernel as ``(out, in·k·k)`` (GSGP Sec. 3).
    ``m_l``: the number of patches it is applied to (GSGP Lemma 3.1): 1 for a fully connected
    layer on vectors, output height × width for a convolution, the number of tokens for a
    linear map applied to every token. ``classifier``: the final layer. ``counted``: in the
    family's default average rank (``record.layers: hidden``).
    """

    name: str
    shape: tuple[int, int]
    m_l: int = 1
    classifier: bool = False
    counted: bool = True


STRATEGIES = ("auto", "folded", "loop")


class CohortModel(nn.Module):
    """``R`` networks of one registered family, trained as one model.

    ``net`` is the family's network built from cohort layers: every parameter is stacked over the
    members on dim 0. :meth:`forward` takes the members' inputs ``(R, B, *input_shape)`` and
    returns ``(R, B, n_out)``, one of two ways (``strategy``), with the same result:

    - ``folded``: the members folded into the channel dimension (``(B, R·C, ...)``, see
      ``layers.py``), one batched matmul or grouped convolution per layer — fast where a layer's
      work is small (fully connected nets; any net on a GPU);
    - ``loop``: one plain network called on each member's slice of the stacked parameters
      (``torch.func.functional_call``) — on a CPU, convolutions and attention are compute-bound
      and the plain kernels beat their grouped versions (``bench/conv_strategies.py``).

    ``auto`` takes ``loop`` for families registered with ``loop_on_cpu`` on a CPU, else ``folded``.
    """

    def __init__(self, spec: ModelSpec, members: int, input_shape: tuple[int, ...], n_out: int, strategy: str = "auto"):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.spec, self.members, self.input_shape, self.n_out = spec, members, tuple(input_shape), n_out
        self.family = FAMILIES[spec.family]
        self.strategy = strategy
        self.net = self.family.build(CohortLayers(members), spec, self.input_shape, n_out)
        self._infos: list[MatrixInfo] | None = None
        self._activation_floats: int | None = None
        self._plain_net: list[nn.Module] = []  # the loop strategy's network (a list: not a submodule)
        self._generators: list[torch.Generator] = []

    def uses_loop(self, device: torch.device) -> bool:
        if self.strategy == "auto":
            # one member too: a run's arithmetic is its cohort's
            return self.family.loop_on_cpu and device.type == "cpu"
        return self.strategy == "loop"

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x``: the members' inputs ``(R, B, *input_shape)``, or with ``shared`` one input
        ``(B, *input_shape)`` for every member (evaluation: not copied per member, see
        ``layers.py``). Returns ``(R, B, n_out)``."""
        if self.uses_loop(x.device):
            return self._loop_forward(x, shared)
        if shared:
            members, batch, folded = self.members, x.shape[0], x
        else:
            members, batch = x.shape[:2]
            folded = x.transpose(0, 1).flatten(1, 2)  # (R, B, C, ...) -> (B, R·C, ...)
        out = self.net(folded)  # (B, R·n_out)
        return out.view(batch, members, -1).transpose(0, 1)  # (R, B, n_out)

    def _loop_forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Each member's plain network on its own slice of the stacked parameters and buffers
        (``unbind`` views: gradients land in the stacked ``.grad`` in one stack per parameter,
        batch norm updates the stacked running statistics in place)."""
        if not self._plain_net:
            self._plain_net.append(self.plain().to(x.device))
        plain = self._plain_net[0].train(self.training)
        dropouts = [m for m in plain.modules() if isinstance(m, Dropout)]
        tensors = {n: t.unbind(0) for n, t in [*self.net.named_parameters(), *self.net.named_buffers()]}
        outputs = []
        for r in range(self.members):
            for dropout in dropouts:
                dropout.generator = self._generators[r] if self._generators else None
            outputs.append(functional_call(plain, {n: t[r] for n, t in tensors.items()}, (x if shared else x[r],)))
        return torch.stack(outputs)  # (R, B, n_out)

    def plain(self) -> nn.Module:
        """A fresh plain network of this family (uninitialized weights)."""
        return self.family.build(PLAIN, self.spec, self.input_shape, self.n_out)

    # -- weight matrices ----------------------------------------------------------------------
    def matrix_infos(self) -> list[MatrixInfo]:
        if self._infos is None:
            self._trace()
        return self._infos

    def activation_floats(self) -> int:
        """Floats of every layer's output for one sample and member (an evaluation's memory)."""
        if self._activation_floats is None:
            self._trace()
        return self._activation_floats

    def weight_matrix(self, name: str) -> torch.Tensor:
        """The stacked ``(R, out, in)`` matrix of a listed weight matrix."""
        return self.net.get_submodule(name).matrix

    def _apply(self, fn, recurse=True):
        self._plain_net.clear()  # rebuilt on the new device at the next loop forward
        return super()._apply(fn, recurse)

    def _trace(self) -> None:
        """One forward pass of a plain network on the meta device: each matrix's m_l, shapes."""
        with torch.device("meta"):
            plain = self.plain().eval()
        outputs: dict[str, tuple[int, ...]] = {}
        hooks = [
            m.register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, tuple(o.shape)))
            for n, m in plain.named_modules()
            if not list(m.children())
        ]
        with torch.no_grad():
            plain(torch.empty(1, *self.input_shape, device="meta"))
        for hook in hooks:
            hook.remove()
        infos = []
        for name, module in self.net.named_modules():
            if isinstance(module, (CohortLinear, CohortConv2d)):
                out = outputs[name]
                m_l = math.prod(out[2:]) if isinstance(module, CohortConv2d) else math.prod(out[1:-1])
                shape = tuple(module.matrix.shape[1:])
                classifier = name == self.family.classifier
                infos.append(MatrixInfo(name, shape, m_l, classifier, is_counted(self.family, name)))
        self._infos = infos
        self._activation_floats = sum(math.prod(s[1:]) for s in outputs.values())

    # -- members ------------------------------------------------------------------------------
    def reset_member(self, r: int, generator: torch.Generator) -> None:
        """Initialize member ``r`` from its own generator, layer by layer in module order."""
        for module in self.net.modules():
            if hasattr(module, "reset_member"):
                module.reset_member(r, generator)

    def draws_in_forward(self) -> bool:
        """Whether a training forward draws random numbers (dropout with p > 0)."""
        return any(isinstance(m, (CohortDropout, nn.Dropout)) and m.p > 0 for m in self.net.modules())

    def set_generators(self, generators: list[torch.Generator]) -> None:
        """The members' generators, from which dropout draws each member's masks."""
        self._generators = generators
        for module in self.net.modules():
            if isinstance(module, CohortDropout):
                module.generators = generators

    def member_module(self, r: int) -> nn.Module:
        """Member ``r`` as a plain PyTorch network (its own copy of the weights)."""
        plain = self.plain()
        state = {name: value[r] for name, value in self.net.state_dict().items()}
        missing, unexpected = plain.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
        return plain
