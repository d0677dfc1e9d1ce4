"""Which runs train, and in which cohorts: grouping, memory estimate, cohort sizing.

Runs that share model, data, loss, batch size and record settings (``RunConfig.cohort_key``) and
resume from the same checkpoint epoch on the same training path (eager or native) can train as
one cohort. A group is cut into cohorts that fit a memory cap and, when there are fewer cohorts
than workers, halved until every worker has one (a cohort of R members costs about R solo runs'
arithmetic, so this trades a little vectorization for parallelism). Each cohort carries its
estimated arithmetic (:func:`epoch_flops`): cohorts are dispatched largest first, and the
sweep's progress estimates the time left from it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig
from ..models import build_model
from ..options import SweepOptions
from ..store.integrity import resume_point, scan
from ..store.run_store import RunStore, is_run
from ..training.engine import EVAL_FLOATS
from ..training.losses import output_size

FLOAT = 4  # bytes of a float32
CPU_MEMORY_FRACTION = 0.5  # of physical RAM, shared by the worker processes
# a layer's fixed cost per training step, in FLOP-equivalents: about 0.05 ms on one core of the
# 2-core development machine, against 20–50 GFLOP/s for its small matrix products (epoch_flops)
LAYER_STEP_FLOPS = 1e6


@dataclass
class Cohort:
    """Runs that train together; ``resume_epoch`` is their common checkpoint epoch."""

    configs: list[RunConfig]
    resume_epoch: int
    bytes: int  # estimated peak memory
    epoch_flops: float = 0.0  # estimated arithmetic of one member's epoch (epoch_flops)

    @property
    def run_ids(self) -> list[str]:
        return [c.run_id() for c in self.configs]

    @property
    def flops(self) -> float:
        """Estimated arithmetic left to train: members × epochs left × :func:`epoch_flops`."""
        return len(self.configs) * (self.configs[0].train.epochs - self.resume_epoch) * self.epoch_flops


@dataclass
class Plan:
    cohorts: list[Cohort]
    finished: list[RunConfig] = field(default_factory=list)  # done or diverged: reused
    memory_cap: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # run id -> what is damaged: retrained from the start

    @property
    def pending(self) -> int:
        return sum(len(c.configs) for c in self.cohorts)


def estimate_bytes(config: RunConfig, members: int, data) -> int:
    """Peak memory of a cohort of ``members`` runs of ``config`` training on ``data``.

    Counted: parameters, their gradients and momentum buffers (3 × the cohort's parameters,
    built on the meta device: no memory is allocated), the activations of one training step
    (every module's output on a meta forward pass of a ``(members, batch_size, *input)``
    batch, × 2 for their gradients), one evaluation chunk's input, and the data set and the
    members' data orders. The estimate is an upper bound for the step's tensors, not for the
    allocator's fragmentation.
    """
    n_out = output_size(config.loss, data.num_classes)
    with torch.device("meta"):
        model = build_model(config.model, members, data.input_shape, n_out)
        params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        activations = _activations(model, members, config.train.batch_size, data.input_shape)
    n_train, n_test = len(data.x_train), len(data.x_test)
    sample = math.prod(data.input_shape)
    eval_chunk = min(EVAL_FLOATS, members * max(n_train, n_test) * sample)
    data_bytes = (n_train + n_test) * (sample * FLOAT + 8) + members * n_train * 8
    return FLOAT * (3 * params + 2 * activations + eval_chunk) + data_bytes


def forward_cost(config: RunConfig, data) -> tuple[float, int]:
    """(FLOPs of one member's forward pass on one sample, its layers: leaf modules).

    FLOPs are counted by torch's ``FlopCounterMode`` (matrix products, convolutions, attention) on
    a meta forward pass in eval mode, so nothing is computed or allocated; a model that cannot run
    on the meta device falls back to 2 × each weight matrix's entries × the patches it is applied
    to (``MatrixInfo.m_l``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    n_out = output_size(config.loss, data.num_classes)
    with torch.device("meta"):
        model = build_model(config.model, 1, data.input_shape, n_out).eval()
        layers = sum(1 for m in model.modules() if not list(m.children()))
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.no_grad():
                model(torch.empty(1, 2, *data.input_shape))
            return counter.get_total_flops() / 2, layers
        except Exception:  # noqa: BLE001  any op without a meta kernel: the coarse count
            return float(sum(2 * i.shape[0] * i.shape[1] * i.m_l for i in model.matrix_infos())), layers


def epoch_flops(config: RunConfig, data, cost: tuple[float, int] | None = None) -> float:
    """Estimated work of one member's epoch, in FLOPs: the unit of the sweep's progress.

    Each training step: forward and backward on its batch (3 forward passes' worth per sample)
    plus :data:`LAYER_STEP_FLOPS` per layer, the fixed cost of running a layer's operations at
    all, which dominates small models at small batch sizes on a CPU (B = 8 takes 3–4 times as
    long per epoch as B = 32 there, for the same arithmetic). Each record (every ``record.every``
    epochs): a forward pass over the training and test sets. Left out: the singular values of each
    record. ``cost``: :func:`forward_cost`'s result, when known.
    """
    per_sample, layers = forward_cost(config, data) if cost is None else cost
    n_train, n_test, batch = len(data.x_train), len(data.x_test), config.train.batch_size
    steps = n_train // batch if config.train.drop_last else math.ceil(n_train / batch)
    train = steps * layers * LAYER_STEP_FLOPS + 3 * per_sample * (steps * batch if config.train.drop_last else n_train)
    return train + per_sample * (n_train + n_test) / config.record.every


def _activations(model, members: int, batch: int, input_shape: tuple) -> int:
    """Elements output by the model's leaf modules on one ``(members, batch, *input)`` batch.

    A meta forward pass with hooks; a model that cannot run on the meta device falls back to
    three tensors (linear map, normalization, activation) per weight matrix output.
    """
    outputs: list[torch.Tensor] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in leaves]
    try:
        model(torch.empty(members, batch, *input_shape))
        return sum(o.numel() for o in outputs if isinstance(o, torch.Tensor))
    except Exception:  # noqa: BLE001  any op without a meta kernel: the coarse count
        return sum(3 * members * batch * i.shape[0] * i.m_l for i in model.matrix_infos())
    finally:
        for hook in hooks:
            hook.remove()


def default_memory_cap(device: torch.device, jobs: int) -> int:
    """Bytes one cohort may use: free GPU memory (90 %), or a share of RAM per worker on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(ram * CPU_MEMORY_FRACTION / max(jobs, 1))


def largest_fitting(config: RunConfig, data, cap: int, limit: int) -> int:
    """The most members (at most ``limit``, at least 1) whose estimate fits ``cap`` bytes."""
    one = estimate_bytes(config, 1, data)
    per_member = max(estimate_bytes(config, 2, data) - one, 1)
    fit = 1 + (cap - one) // per_member
    return int(max(1, min(limit, fit)))


def split_evenly(items: list, size: int) -> list[list]:
    """``items`` in ceil(n/size) consecutive chunks whose lengths differ by at most one."""
    count = math.ceil(len(items) / size)
    base, extra = divmod(len(items), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + base + (i < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


def plan_sweep(
    configs: list[RunConfig],
    results: Path,
    datasets: dict,
    sweep: SweepOptions | None = None,
    *,
    device: torch.device | None = None,
    force: bool = False,
) -> Plan:
    """Group the runs of ``configs`` that still need training into cohorts of at most
    ``sweep.max_cohort`` runs that fit ``sweep.memory_cap``, at least ``sweep.jobs`` of them
    when the runs allow.

    ``datasets`` maps a ``config.data`` to its loaded :class:`~rankbias.data.Dataset`.
    """
    device = device if device is not None else torch.device("cpu")
    sweep = sweep or SweepOptions()
    workers = sweep.jobs
    cap = sweep.memory_cap if sweep.memory_cap is not None else default_memory_cap(device, workers)
    groups: dict[tuple, list[RunConfig]] = {}
    finished, damaged = [], {}
    stores = {config.run_id(): RunStore(results, config.run_id()) for config in configs}
    found = scan([s.dir for s in stores.values() if is_run(s.dir)]).damaged  # one pass over the stored runs
    for config in configs:
        store = stores[config.run_id()]
        epoch, path, reason = 0, "", None if force or store.dir not in found else str(found[store.dir])
        if not force and reason is None:
            status = store.status()  # readable: the scan checked it
            if status and status["state"] in ("done", "diverged"):
                finished.append(config)
                continue
            epoch, path, reason = resume_point(store)  # reads the checkpoint
        if reason is not None:
            damaged[config.run_id()] = reason
        groups.setdefault((config.cohort_key(), epoch, path), []).append(config)
    cohorts = []
    costs: dict[tuple, tuple[float, int]] = {}  # by model and data: forward_cost
    for (_, epoch, _), members in groups.items():
        data = datasets[members[0].data]
        size = largest_fitting(members[0], data, cap, sweep.max_cohort)
        shape = (members[0].model, members[0].data, members[0].loss)
        if shape not in costs:
            costs[shape] = forward_cost(members[0], data)
        work = epoch_flops(members[0], data, costs[shape])
        cohorts += [Cohort(chunk, epoch, 0, work) for chunk in split_evenly(members, size)]
    while len(cohorts) < workers and any(len(c.configs) > 1 for c in cohorts):
        big = max(cohorts, key=lambda c: len(c.configs))
        cohorts.remove(big)
        half = split_evenly(big.configs, math.ceil(len(big.configs) / 2))
        cohorts += [Cohort(chunk, big.resume_epoch, 0, big.epoch_flops) for chunk in half]
    for cohort in cohorts:
        cohort.bytes = estimate_bytes(cohort.configs[0], len(cohort.configs), datasets[cohort.configs[0].data])
    cohorts.sort(key=lambda c: -c.flops)  # the most work first
    return Plan(cohorts, finished, cap, damaged)
