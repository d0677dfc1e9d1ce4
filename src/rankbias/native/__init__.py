"""The native training step: one C++ call per step for a cohort of fully connected networks.

``cohort_step.cpp`` does one SGD step (forward, loss, backward, update) of every member of a
cohort of ``mlp``, ``mlp-bn``, ``res``, ``res-bn`` or ``twolayer`` networks on the CPU, member by
member, the members spread over OpenMP threads; each member's arithmetic depends on nothing but
its own data and hyperparameters (not the cohort's size, its position, the thread count).

**How it is built.** A plain C++ library on raw pointers, loaded with ``ctypes``, not a PyTorch
extension: it does not depend on the torch build (headers, ABI, version), so a torch upgrade
never breaks it, and it builds with nothing but a C++ compiler. It is compiled at first use for
the machine it runs on (``-O3 -march=native -fopenmp``; where that fails, without
``-march=native``, then without OpenMP: one thread, a notice; a failed variant is remembered) into
a cache folder (``$RANKBIAS_CACHE/native``, else ``$XDG_CACHE_HOME/rankbias/native``, else
``~/.cache/rankbias/native``), under a name keyed by the source, the flags, the compiler's version
and the CPU (model and instruction-set flags), written to a temporary file and renamed into place
(two processes building at once both succeed; one's file wins). A one-line notice goes to stderr
while it builds (~15 s).

**Where it cannot be used** (no compiler, a failed build, ``RANKBIAS_NATIVE=0``), :func:`available`
is False, :func:`reason` says why, and a one-line notice goes to stderr once per process; callers
fall back to the eager path. ``CXX`` chooses the compiler (default ``g++``). ``python -m
rankbias.native`` builds it ahead of use (``make demo`` and ``make test`` do) and prints where.

The engine uses it by default wherever it can run (``EngineOptions(native=None)``): measured on
a 2-core CPU from 1.6× to 5× the eager path at batch 16–256 for widths 100–500, and at least at
parity (0.97–1.26×) for 2,000–10,000-wide layers at batch 128 (docs/speed.md).

:func:`plan` maps a :class:`~rankbias.models.CohortModel` and its
:class:`~rankbias.training.optimizer.CohortSGD` onto the library's layer chain;
:meth:`Plan.step` runs one step on ``(R, B, *input)`` inputs and returns the members' losses.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cohort_step.cpp")
ABI_VERSION = 1
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC"]
# tried in order: the machine's instruction set with OpenMP threads, then portable, then without
# OpenMP (e.g. Apple clang has no libomp: one thread per step; a notice says so)
VARIANTS = (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], [])
FAMILIES = ("mlp", "mlp-bn", "res", "res-bn", "twolayer")
LOSSES = {"cross_entropy": 0, "mse_onehot": 1, "mse_scalar": 2}

_state: dict = {}  # "lib" (a ctypes library or None), "reason", "noticed"


def available() -> bool:
    """Whether the native step can run here (builds it at the first call, if needed)."""
    return _load() is not None


def reason() -> str:
    """Why the native step is not available ('' when it is)."""
    _load()
    return _state.get("reason", "")


def library_path() -> Path | None:
    """The compiled library in use, if any."""
    _load()
    return _state.get("path")


def reset() -> None:
    """Forget the loaded library and the notice (tests: to read the environment again)."""
    _state.clear()


def cache_dir() -> Path:
    root = os.environ.get("RANKBIAS_CACHE")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rankbias" / "native"


def _notice(message: str) -> None:
    print(f"rankbias: {message}", file=sys.stderr, flush=True)


def _unavailable(why: str) -> None:
    _state.update(lib=None, reason=why)
    if not _state.get("noticed"):
        _state["noticed"] = True
        _notice(f"native training step unavailable ({why}); using the eager path")


def _cpu_identity() -> str:
    """The CPU's model and instruction-set flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(keep)))


def _load():
    if "lib" in _state:
        return _state["lib"]
    if os.environ.get("RANKBIAS_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        _unavailable("RANKBIAS_NATIVE=0")
        return None
    compiler = os.environ.get("CXX") or "g++"
    exe = shutil.which(compiler)
    if exe is None:
        _unavailable(f"no C++ compiler: {compiler!r} not found")
        return None
    try:
        path = _build(exe)
        lib = ctypes.CDLL(str(path))
        if lib.rb_abi_version() != ABI_VERSION:
            raise OSError(f"{path} has ABI version {lib.rb_abi_version()}, expected {ABI_VERSION}")
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        _unavailable(str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)
        return None
    c_int, c_int64, c_double, c_void_p = ctypes.c_int, ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    lib.rb_cohort_step.restype = c_int
    lib.rb_cohort_step.argtypes = [
        c_int, c_int, c_void_p, c_void_p, c_int64, c_int, c_void_p, c_void_p, c_void_p, c_void_p,
        c_int, c_double, c_double, c_double, c_int,
    ]  # fmt: skip
    _state.update(lib=lib, reason="", path=path)
    return lib


def _build(exe: str) -> Path:
    source = SOURCE.read_bytes()
    version = subprocess.run([exe, "--version"], check=False, capture_output=True, text=True, timeout=60).stdout.split(
        "\n"
    )[0]
    folder = cache_dir()
    errors: list[str] = []  # each failed variant's first error line
    for variant in VARIANTS:
        flags = FLAGS + variant
        key = hashlib.sha256(
            b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_identity().encode()])
        ).hexdigest()[:20]
        path = folder / f"cohort_step-{key}.so"
        failed = path.with_suffix(".failed")  # this variant failed before: its first error line
        if failed.exists():
            errors.append(failed.read_text().strip())
            continue
        if not path.exists():
            error = _compile(exe, flags, folder, path)
            if error is not None:
                failed.write_text(error + "\n")
                errors.append(error)
                continue
        if "-fopenmp" not in variant:
            _notice(f"the native training step was built without OpenMP ({errors[0]}): one thread a step")
        return path
    raise RuntimeError(f"the build failed: {errors[0]}")


def _compile(exe: str, flags: list[str], folder: Path, path: Path) -> str | None:
    """Compile the library with ``flags`` into ``path`` (atomically); None, or the compiler's
    first error line."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cohort_step-", suffix=".so", dir=folder)
    os.close(fd)
    _notice(f"compiling the native training step for this machine (once, ~15 s): {path}")
    try:
        done = subprocess.run(
            [exe, *flags, "-o", tmp, str(SOURCE)], check=False, capture_output=True, text=True, timeout=600
        )
        if done.returncode == 0:
            os.replace(tmp, path)  # atomic: another process's identical file may be replaced
            return None
        return (done.stderr.strip().splitlines() or [f"{exe} exited with {done.returncode}"])[0][:300]
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- the model as a chain of layers --------------------------------------------------------------
_ACT = {"relu": 1, "leaky_relu": 2}
_N_PTRS = 10


def unsupported(model, loss: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """Why ``model`` (a ``CohortModel``) cannot train natively with ``loss`` on ``device``; None if it can."""
    family = model.spec.family
    if family not in FAMILIES:
        return f"family {family} (native: {', '.join(FAMILIES)})"
    if model.spec.activation not in _ACT:
        return f"activation {model.spec.activation}"
    if loss not in LOSSES:
        return f"loss {loss}"
    if device.type != "cpu":
        return f"device {device.type}"
    dtype = dtype or next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        return f"dtype {dtype}"
    return None


def _chain(model) -> list[tuple]:
    """``(linear, norm or None, act, skip)`` per layer, in order: ``skip`` = index of the layer whose
    input is added to this layer's output (a residual block), or -1."""
    from ..models.layers import CohortBatchNorm

    net, family = model.net, model.spec.family
    act = _ACT[model.spec.activation]
    norm = lambda m: m if isinstance(m, CohortBatchNorm) else None
    if family in ("mlp", "mlp-bn"):
        chain = [(lin, norm(bn), act, -1) for lin, bn in zip(net.hidden, net.norms)]
        return chain + [(net.out, None, 0, -1)]
    if family in ("res", "res-bn"):
        chain = [(net.input, None, 0, -1)]
        for block in net.blocks:
            first = len(chain)
            chain += [(block.w1, norm(block.n1), act, -1), (block.w2, norm(block.n2), act, first)]
        return chain + [(net.out, None, 0, -1)]
    if family == "twolayer":
        return [(net.V, None, act, -1), (net.a, None, 0, -1)]
    raise ValueError(f"no native chain for family {family}")


class Plan:
    """One cohort's model and optimizer as the library's arguments; rebuilt by :func:`plan` when
    the cohort changes (a member dropped, new learning rates: ``optimizer.version``)."""

    def __init__(self, model, optimizer, loss: str):
        lib = _load()
        if lib is None:
            raise RuntimeError(f"the native step is not available: {reason()}")
        self.lib, self.model, self.optimizer, self.loss = lib, model, optimizer, loss
        chain = _chain(model)
        index = {id(p): i for i, p in enumerate(optimizer.params)}
        buffers = optimizer.buffers

        def buf(p):
            return buffers[index[id(p)]] if (p is not None and buffers) else None

        ints, tensors = [], []
        slope = 0.01
        momentum = eps = None
        for lin, bn, act, skip in chain:
            in_f, out_f = lin.in_features, lin.out_features
            bn_kind = 0 if bn is None else (2 if bn.detach_var else 1)
            ints += [in_f, out_f, int(lin.bias is not None), bn_kind, act, skip]
            if bn is not None:
                g, b = bn.weight, bn.bias
                if momentum is not None and (momentum, eps) != (bn.momentum, bn.eps):
                    raise ValueError("the native step takes one batch-norm momentum and eps for all layers")
                momentum, eps = bn.momentum, bn.eps
            else:
                g = b = None
            rm, rv = (bn.running_mean, bn.running_var) if bn is not None else (None, None)
            tensors += [lin.weight, lin.bias, g, b, rm, rv, buf(lin.weight), buf(lin.bias), buf(g), buf(b)]
        dtype = lin.weight.dtype
        for t in tensors:
            if t is not None and (not t.is_contiguous() or t.dtype != dtype or t.device.type != "cpu"):
                raise ValueError("the native step needs contiguous CPU tensors of one dtype")
        self.tensors = tensors  # kept alive
        self.dtype = dtype
        self.n_layers = len(chain)
        self.ints = torch.tensor(ints, dtype=torch.int64)
        self.ptrs = (ctypes.c_void_p * len(tensors))(*[0 if t is None else t.data_ptr() for t in tensors])
        opt = optimizer
        hyper = torch.stack([opt.lr, opt.momentum, opt.weight_decay, opt.nesterov], 1)  # float32, as eager
        self.hyper = hyper.to(torch.float64).contiguous()
        self.members = opt.lr.numel()
        self.bn_momentum, self.bn_eps, self.slope = momentum or 0.1, eps or 1e-5, slope
        self.loss_kind = LOSSES[loss]
        self.key = (self.members, opt.version, tuple(0 if t is None else t.data_ptr() for t in tensors[:1]))

    def step(self, x: torch.Tensor, y: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """One SGD step of every member on ``x`` ``(R, B, *input)`` and labels ``y`` ``(R, B)``;
        returns the members' mini-batch losses ``(R,)`` in the parameters' dtype."""
        members, batch = x.shape[:2]
        if members != self.members:
            raise ValueError(f"{members} members' inputs for a plan of {self.members}")
        x = x.reshape(members, batch, -1).to(self.dtype).contiguous()
        y = (y.to(self.dtype) if self.loss_kind == 2 else y.to(torch.int64)).contiguous()
        losses = torch.empty(members, dtype=self.dtype)
        threads = torch.get_num_threads() if threads is None else threads
        rc = self.lib.rb_cohort_step(
            8 if self.dtype == torch.float64 else 4, self.n_layers, self.ints.data_ptr(), self.ptrs, members, batch,
            x.data_ptr(), y.data_ptr(), losses.data_ptr(), self.hyper.data_ptr(), self.loss_kind,
            self.bn_momentum, self.bn_eps, self.slope, threads,
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"the native step refused its arguments (code {rc})")
        return losses


def plan(model, optimizer, loss: str, previous: Plan | None = None) -> Plan:
    """A :class:`Plan` for this model and optimizer, ``previous`` when it still fits."""
    first = model.net.parameters().__next__()
    if (
        previous is not None
        and previous.model is model
        and previous.members == optimizer.lr.numel()
        and previous.key[1] == optimizer.version
        and previous.key[2] == (first.data_ptr(),)
        and all(t is None or t.data_ptr() == p for t, p in zip(previous.tensors, previous.ptrs))
    ):
        return previous
    return Plan(model, optimizer, loss)
