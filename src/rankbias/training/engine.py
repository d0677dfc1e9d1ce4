"""The cohort engine: runs that share a model shape, data set and batch size train as one model.

Each member keeps its own seed (initialization and data order come from one ``torch.Generator``
per member), learning rate, momentum, weight decay and schedule. Parameters are stacked on dim 0
(see ``models/layers.py``), so one step of the cohort is one step of every member, and a member's
records equal those of the same run trained alone (to float tolerance).

At epoch 0 and every ``record.every`` epochs (and the last) each member gets its records and a
checkpoint; a member whose loss becomes NaN or inf is recorded as diverged and removed from the
cohort, the others go on.
"""

from __future__ import annotations

import fnmatch
import math
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import torch

from ..config import RunConfig
from ..data import Dataset
from ..data.augment import augment
from ..errors import ConfigError, StoreError
from ..models import CohortModel, build_model
from ..options import EngineOptions
from ..spectra.measures import rank_measures, singular_values
from ..store import provenance
from ..store.integrity import scan
from ..store.io import writing
from ..store.run_store import RunStore
from ..store.schema import table
from .cuda_graph import GraphedStep
from .losses import member_correct, member_losses, output_size, sample_losses
from .optimizer import CohortSGD

EVAL_FLOATS = 1 << 25  # members × samples × activation floats per evaluation chunk (128 MB of float32)


@dataclass
class Member:
    config: RunConfig
    store: RunStore


def counted_matrices(model: CohortModel, layers) -> list[str]:
    """Names of the weight matrices that count in the average rank (``record.layers``): the
    family's default set (``hidden``), ``all``, or names and glob patterns, in model order."""
    infos = model.matrix_infos()
    if layers == "hidden":
        return [i.name for i in infos if i.counted]
    if layers == "all":
        return [i.name for i in infos]
    return [i.name for i in infos if any(fnmatch.fnmatchcase(i.name, p) for p in layers)]


# where CohortTrainer(fused_update=None) fuses: faster on CPUs, not on an H200 (docs/speed.md)
FUSED_UPDATE_DEVICES = ("cpu",)
PATHS = ("eager", "native")  # how a cohort's training steps run (CohortTrainer.path)
_NOTICES: set[str] = set()


def _notice_once(message: str) -> None:
    if message not in _NOTICES:
        _NOTICES.add(message)
        print(f"rankbias: {message}", file=sys.stderr, flush=True)


class CohortTrainer:
    """Trains ``members`` (runs of one cohort key) as one cohort model on ``data``, as ``options``
    say (:class:`~rankbias.options.EngineOptions`; default: on the CPU).

    ``options.fused_update``: the cohort linear layers apply their weights' SGD update inside their
    backward (``CohortSGD.fuse``, same update, faster on a CPU); ``None``: on the device types in
    :data:`FUSED_UPDATE_DEVICES` — for every cohort size, so that a run does the same arithmetic
    alone as in a cohort (it may resume alone); ``False`` keeps every update in ``CohortSGD.step``.
    ``options.cuda_graph``: on a GPU, replay the training step from a CUDA graph
    (``cuda_graph.py``); ``None``: whenever the step can be captured (a CUDA device, no dropout,
    no augmentation). ``options.tf32``: float32 matrix products and convolutions on a GPU may use
    TensorFloat-32 (off by default). ``options.native``: whether the training steps run in the
    native step (``rankbias.native``): ``None`` wherever it can (:meth:`native_unsupported`;
    without a compiler the native module says so once); ``True`` the same, with a notice for a
    cohort it cannot train; ``False`` never. :attr:`path` (``eager`` or ``native``) is decided when training
    starts, recorded in each member's checkpoint and ``provenance.json`` (``training_path``); a
    resumed cohort continues on its checkpoints' path (so that it replays the uninterrupted
    run's arithmetic), whatever ``options.native`` says, unless that path cannot run here (a
    notice). The sweep planner never puts runs of different paths in one cohort.
    """

    def __init__(self, members: list[Member], data: Dataset, options: EngineOptions | None = None):
        options = options or EngineOptions(device="cpu")
        self.members = list(members)
        self.device = device = options.torch_device
        self.data = data.to(device)
        self.progress = options.progress
        self.native_requested = options.native
        self.path = "eager"
        self._plan = None  # the native step's arguments (rankbias.native.Plan)
        fused_update, cuda_graph = options.fused_update, options.cuda_graph
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = options.tf32
        cfg = self.config = members[0].config
        self.n_out = output_size(cfg.loss, data.num_classes)
        self.model = build_model(cfg.model, len(members), data.input_shape, self.n_out).to(device)
        self.generators = [torch.Generator().manual_seed(m.config.train.seed) for m in members]
        for r, generator in enumerate(self.generators):
            self.model.reset_member(r, generator)
        self.model.set_generators(self.generators)  # dropout masks from each member's generator
        self.param_names = [name for name, _ in self.model.named_parameters()]
        opts = [m.config.optimizer for m in members]
        self.optimizer = CohortSGD(
            self.model.parameters(),
            lr=[o.lr for o in opts],
            momentum=[o.momentum for o in opts],
            weight_decay=[o.weight_decay for o in opts],
            nesterov=[o.nesterov for o in opts],
        )
        self.fused_update = device.type in FUSED_UPDATE_DEVICES if fused_update is None else fused_update
        if self.fused_update:
            self.optimizer.fuse(self.model.modules())
        capturable = device.type == "cuda" and not cfg.augment.enabled and not self.model.draws_in_forward()
        if cuda_graph and not capturable:
            raise ConfigError("cuda_graph", "needs a CUDA device and a training step without dropout or augmentation")
        self.graphed = GraphedStep(self._train_step) if (capturable if cuda_graph is None else cuda_graph) else None
        self.infos = self.model.matrix_infos()
        self.counted = set(counted_matrices(self.model, cfg.record.layers))
        self.epoch = 0
        self.step = 0
        self.previous: dict[str, torch.Tensor] | None = None  # matrices at the last record
        self.step_norms: list[tuple[int, torch.Tensor]] = []  # (step, (L, R) norms) since the last record

    # -- public -----------------------------------------------------------------------------
    def run(self) -> None:
        """Train from the members' checkpoints (or from scratch) to the last epoch."""
        self._resume_or_start()
        cfg = self.config
        bar = _progress_bar(cfg.train.epochs, self.epoch, len(self.members), self.progress)
        while self.epoch < cfg.train.epochs and self.members:
            self.epoch += 1
            lrs = [m.config.optimizer.lr * m.config.schedule.multiplier(self.epoch) for m in self.members]
            self.optimizer.set_lr(lrs)
            start = time.perf_counter()
            recorded = self.epoch % cfg.record.every == 0 or self.epoch == cfg.train.epochs
            batch_loss = self._train_epoch(cfg.record.step_norms if recorded else 0)
            epoch_seconds = _elapsed(start, self.device)
            self._drop_diverged(batch_loss)
            if self.members and recorded:
                self._record(batch_loss, epoch_seconds)
            bar.update(1)
        bar.close()
        for m in self.members:
            _finish(m.store, "done", self.epoch)

    # -- training ---------------------------------------------------------------------------
    def _train_epoch(self, norm_steps: int = 0) -> torch.Tensor:
        """One epoch of every member; returns each member's mean mini-batch loss.

        ``norm_steps`` = k > 0 keeps the weight matrices' norms at the step counts T − k … T, T the
        epoch's last (before the epoch's first step when k ≥ its steps), for ``record.step_norms``.
        """
        cfg = self.config
        n, batch = len(self.data.x_train), cfg.train.batch_size
        steps = n // batch if cfg.train.drop_last else math.ceil(n / batch)
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)  # (R, n)
        members = len(self.members)
        total = torch.zeros(members, device=self.device)
        self.step_norms = [(self.step, self._matrix_norms())] if norm_steps >= steps else []
        self.model.train()
        graph_key = (members, self.optimizer.version)
        for s in range(steps):
            index = order[:, s * batch : (s + 1) * batch].reshape(-1)  # (R·B,): each member's own samples
            total += self._train_step(index) if self.graphed is None else self.graphed(index, graph_key)
            if norm_steps and s >= steps - norm_steps - 1:  # after the update, step count self.step + s + 1 ≥ T − k
                self.step_norms.append((self.step + s + 1, self._matrix_norms()))
        self.step += steps
        return total / steps

    def _train_step(self, index: torch.Tensor) -> torch.Tensor:
        """One SGD step of every member on its samples ``index`` ``(R·B,)``; returns the members'
        mini-batch losses ``(R,)``. No host synchronization (a CUDA graph may capture it)."""
        cfg, members = self.config, len(self.members)
        x, y = self.data.x_train, self.data.y_train
        xb = x.index_select(0, index).view(members, -1, *x.shape[1:])  # (R, B, *input_shape)
        if cfg.augment.enabled:
            xb = augment(xb, self.generators, cfg.augment)
        if self.path == "native":
            from .. import native

            self._plan = native.plan(self.model, self.optimizer, cfg.loss, self._plan)
            return self._plan.step(xb, y.index_select(0, index).view(members, -1))
        losses = member_losses(cfg.loss, self.model(xb), y.index_select(0, index).view(members, -1))  # (R,)
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def _matrix_norms(self) -> torch.Tensor:
        """Frobenius norm of every weight matrix of every member: (L, R), on the device."""
        return torch.stack([self.model.weight_matrix(i.name).flatten(1).norm(dim=1) for i in self.infos])

    def _drop_diverged(self, batch_loss: torch.Tensor) -> None:
        finite = torch.isfinite(batch_loss).tolist()
        if all(finite):
            return
        for member, ok in zip(self.members, finite):
            if not ok:
                _finish(member.store, "diverged", self.epoch, f"training loss is not finite at epoch {self.epoch}")
        keep = torch.tensor([i for i, ok in enumerate(finite) if ok], dtype=torch.long)
        self._select(keep)

    def _select(self, keep: torch.Tensor) -> None:
        """Keep only members ``keep`` in the model, optimizer and bookkeeping."""
        keep_device = keep.to(self.device)
        for module in self.model.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    param.data = param.data[keep_device]
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer[keep_device]
        self.model.members = len(keep)
        self.optimizer.select(keep_device)
        idx = keep.tolist()
        self.members = [self.members[i] for i in idx]
        self.generators = [self.generators[i] for i in idx]
        self.model.set_generators(self.generators)
        self.step_norms = [(step, norms[:, keep_device]) for step, norms in self.step_norms]
        if self.previous is not None:
            self.previous = {k: v[keep_device] for k, v in self.previous.items()}

    # -- evaluation and records -------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy of every member on a whole set, in eval mode.

        The set goes through in chunks whose size depends on the cohort's size (memory); the
        per-sample losses are kept and averaged once, so a member's loss does not depend on
        the chunks, hence not on its cohort."""
        members, n = len(self.members), len(x)
        chunk = max(1, EVAL_FLOATS // (members * max(x[0].numel(), self.model.activation_floats())))
        losses = []  # (R, chunk) each
        correct = torch.zeros(members, device=self.device)
        self.model.eval()
        for s in range(0, n, chunk):
            xb, yb = x[s : s + chunk], y[s : s + chunk]
            out = self.model(xb, shared=True)  # (R, B, n_out)
            yb = yb.expand(members, *yb.shape)
            losses.append(sample_losses(self.config.loss, out, yb))
            correct += member_correct(self.config.loss, out, yb, self.data.num_classes)
        self.model.train()
        return torch.cat(losses, 1).mean(1), correct / n

    @torch.no_grad()
    def _record(self, batch_loss: torch.Tensor | None, epoch_seconds: float) -> None:
        """Write every member's records for this epoch, then its checkpoint."""
        start = time.perf_counter()
        cfg, members = self.config, len(self.members)
        train_loss, train_acc = self._evaluate(self.data.x_train, self.data.y_train)
        test_loss, test_acc = self._evaluate(self.data.x_test, self.data.y_test)
        spectra_start = time.perf_counter()
        matrices = {i.name: self.model.weight_matrix(i.name).detach().float() for i in self.infos}
        spectra = _batched_singular_values(matrices)
        per_layer = {}
        for name, sv in spectra.items():
            values = rank_measures(sv, cfg.record.eps, cfg.record.norm)
            if self.previous is None:
                values["delta_fro"] = torch.full((members,), float("nan"), device=self.device)
                values["norm_ratio"] = torch.full((members,), float("nan"), device=self.device)
            else:
                values["delta_fro"] = (matrices[name] - self.previous[name]).flatten(1).norm(dim=1)
                values["norm_ratio"] = self.previous[name].flatten(1).norm(dim=1) / values["fro_norm"]
            per_layer[name] = {k: v.float().cpu() for k, v in values.items()}
        spectra_cpu = {name: sv.cpu() for name, sv in spectra.items()}
        step_norms = [(step, norms.cpu()) for step, norms in self.step_norms]  # one host sync per record
        self.step_norms = []
        spectra_seconds = _elapsed(spectra_start, self.device)
        self.previous = {k: v.clone() for k, v in matrices.items()}
        scalars = {
            "train_loss": train_loss.cpu(),
            "train_acc": train_acc.cpu(),
            "test_loss": test_loss.cpu(),
            "test_acc": test_acc.cpu(),
            "batch_loss": batch_loss.cpu() if batch_loss is not None else torch.full((members,), float("nan")),
            "lr": self.optimizer.lr.cpu(),
        }
        seconds = {
            "epoch_seconds": epoch_seconds,
            "spectra_seconds": spectra_seconds,
            "record_seconds": _elapsed(start, self.device),
        }
        for r, member in enumerate(self.members):
            tables = self._tables(r, member, scalars, per_layer, spectra_cpu, seconds)
            if cfg.record.step_norms:
                tables["step_norms"] = self._step_norm_table(r, member.store.run_id, step_norms)
            member.store.append(self.epoch, tables)
            member.store.save_checkpoint(self._member_state(r))
            member.store.set_status("running", self.epoch)

    def _tables(self, r, member, scalars, per_layer, spectra, seconds) -> dict[str, pa.Table]:
        """Member ``r``'s rows of this record, as tables of the store's schemas (``store/schema.py``)."""
        run_id, epoch = member.store.run_id, self.epoch
        counted = [float(per_layer[n]["eps_rank"][r]) for n in per_layer if n in self.counted]
        deltas = [float(per_layer[n]["delta_fro"][r]) for n in per_layer]
        row = {"run_id": run_id, "epoch": epoch, "step": self.step}
        row |= {k: float(v[r]) for k, v in scalars.items()}
        row |= {
            "avg_rank": sum(counted) / len(counted) if counted else float("nan"),
            "distance": sum(deltas) / len(deltas),
            **seconds,
        }
        layer_rows = []
        for index, info in enumerate(self.infos):
            values = per_layer[info.name]
            layer_rows.append(
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "layer": info.name,
                    "index": index,
                    "rows": info.shape[0],
                    "cols": info.shape[1],
                    "m_l": info.m_l,
                    "counted": info.name in self.counted,
                    **{k: (int(v[r]) if k == "eps_rank" else float(v[r])) for k, v in values.items()},
                }
            )
        spectra_rows = [
            {"run_id": run_id, "epoch": epoch, "layer": i.name, "sv": spectra[i.name][r].numpy()} for i in self.infos
        ]
        return {
            "scalars": table("scalars", [row]),
            "layers": table("layers", layer_rows),
            "spectra": table("spectra", spectra_rows),
        }

    def _step_norm_table(self, r: int, run_id: str, step_norms: list[tuple[int, torch.Tensor]]) -> pa.Table:
        """``record.step_norms``: one row per kept step and weight matrix (GSGP Lemma 3.2's ‖W_t‖)."""
        step_norms = step_norms or [(self.step, self._matrix_norms().cpu())]  # epoch 0: the initialization
        rows = [
            {"run_id": run_id, "epoch": self.epoch, "step": step, "layer": info.name, "fro_norm": float(norms[i, r])}
            for step, norms in step_norms
            for i, info in enumerate(self.infos)
        ]
        return table("step_norms", rows)

    # -- checkpoints ------------------------------------------------------------------------
    def _member_state(self, r: int) -> dict:
        def take(t: torch.Tensor) -> torch.Tensor:
            return t[r].detach().cpu().clone()

        return {
            "epoch": self.epoch,
            "step": self.step,
            "input_shape": list(self.data.input_shape),
            "n_out": self.n_out,
            "params": {n: take(p) for n, p in self.model.named_parameters()},
            "buffers": {n: take(b) for n, b in self.model.named_buffers()},
            "momentum": {n: take(b) for n, b in zip(self.param_names, self.optimizer.buffers)},
            "generator": self.generators[r].get_state(),
            "path": self.path,
        }

    def native_unsupported(self) -> str | None:
        """Why this cohort cannot train with the native step here; None if it can."""
        from .. import native

        cfg = self.config
        why = native.unsupported(self.model, cfg.loss, self.device)
        if why is None and cfg.augment.enabled:
            why = "augmentation"
        if why is None and self.model.draws_in_forward():
            why = "dropout"
        if why is None and not native.available():
            why = native.reason()
        return why

    def _choose_path(self, states: list[dict | None]) -> None:
        """The path of this session: the checkpoints' (a resumed cohort), else the options'."""
        from .. import native

        recorded = {s.get("path", "eager") for s in states if s is not None and s["epoch"] > 0}
        if len(recorded) > 1:
            raise RuntimeError(f"cohort members resume from different training paths {sorted(recorded)}")
        requested = self.native_requested
        if recorded:
            path = recorded.pop()
            if requested is not None and requested != (path == "native"):
                flag = "--native" if requested else "--eager"
                _notice_once(f"runs that began on the {path} path resume on it ({flag} not applied)")
        elif requested is None:
            path = "native" if native.unsupported(self.model, self.config.loss, self.device) is None else "eager"
        else:
            path = "native" if requested else "eager"
        if path == "native":
            why = self.native_unsupported()
            if why is not None:
                if recorded or requested:
                    also = " (resumed runs leave their native path: not bit for bit)" if recorded else ""
                    _notice_once(f"native step not used for {self.config.model.name}: {why}{also}")
                path = "eager"
        self.path = path
        for m in self.members:
            with writing(m.store.dir.parent):
                provenance.note(m.store.dir, training_path=path)

    def _resume_or_start(self) -> None:
        states = [m.store.load_checkpoint() for m in self.members]
        self._choose_path(states)
        if all(s is None or s["epoch"] == 0 for s in states):
            # New runs, or runs killed just after their epoch-0 checkpoint: that checkpoint is the
            # seeded initialization this trainer has just made again, so they all start afresh.
            for m in self.members:  # no status until the first record: a status promises its records
                m.store.drop_after(0)
                m.store.write_config(m.config.to_dict())
            self._record(None, 0.0)
            return
        if any(s is None for s in states):
            raise RuntimeError("a cohort mixes new and resumed runs; group members by resume epoch")
        epochs = {s["epoch"] for s in states}
        if len(epochs) != 1:
            raise RuntimeError(f"cohort members resume from different epochs {sorted(epochs)}")
        params = dict(self.model.named_parameters())
        buffers = dict(self.model.named_buffers())
        momentum = dict(zip(self.param_names, self.optimizer.buffers))
        with torch.no_grad():
            for r, (member, state) in enumerate(zip(self.members, states)):
                for group, targets in (("params", params), ("buffers", buffers), ("momentum", momentum)):
                    for name, value in state[group].items():
                        targets[name][r] = value.to(self.device)
                self.generators[r].set_state(state["generator"])
                member.store.drop_after(state["epoch"])
                member.store.set_status("running", state["epoch"])
        self.epoch, self.step = states[0]["epoch"], states[0]["step"]
        self.previous = {i.name: self.model.weight_matrix(i.name).detach().float().clone() for i in self.infos}


def _finish(store: RunStore, state: str, epoch: int, message: str | None = None) -> None:
    """Merge a member's records and check them whole (every recorded epoch in every table), then
    mark it ``state``; a member whose records cannot be merged or are not whole is marked
    ``failed`` alone (the next sweep retrains it), and its cohort goes on."""
    status = {"state": state, "epoch": epoch}
    try:
        with writing(store.dir.parent):
            store.compact()
        problem = scan([store.dir], {store.dir: status}).damaged.get(store.dir)
        damaged = None if problem is None else str(problem)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 — this member's files, not the cohort's training
        damaged = f"{type(exc).__name__}: {exc}"
    if damaged is None:
        store.set_status(state, epoch, message)
    else:
        store.set_status("failed", epoch, f"its records are not whole after training: {damaged}")


def _batched_singular_values(matrices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Singular values of every ``(R, m, n)`` matrix; matrices of equal shape in one batched call."""
    by_shape: dict[tuple, list[str]] = {}
    for name, w in matrices.items():
        by_shape.setdefault(tuple(w.shape), []).append(name)
    out = {}
    for names in by_shape.values():
        values = singular_values(torch.stack([matrices[n] for n in names]))
        out.update(zip(names, values))
    return out


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, members: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, initial=initial, desc=f"cohort of {members}", unit="epoch", leave=False, disable=None)
