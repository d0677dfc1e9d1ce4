"""The native training step (``rankbias.native``) against the eager cohort step, and a member's
independence of its cohort and the thread count within the native path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import rankbias as rb
from rankbias import native
from rankbias.models import build_model
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer
from rankbias.training.losses import member_losses
from rankbias.training.optimizer import CohortSGD

needs_native = pytest.mark.skipif(not native.available(), reason=f"native step unavailable: {native.reason()}")

INPUT = 12


def _cohort(model: dict, seeds, dtype, lr, momentum, weight_decay, nesterov, n_out=10, fused=True):
    config = rb.RunConfig.from_dict({"model": model}).model
    cohort = build_model(config, len(seeds), (INPUT,), n_out)
    for r, seed in enumerate(seeds):
        cohort.reset_member(r, torch.Generator().manual_seed(seed))
    cohort = cohort.to(dtype).train()
    opt = CohortSGD(cohort.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if fused:
        opt.fuse(cohort.modules())
    return cohort, opt


def _eager_step(model, opt, x, y, loss):
    losses = member_losses(loss, model(x), y)
    losses.sum().backward()
    opt.step()
    return losses.detach()


def _data(members, batch, steps, n_out, loss, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(members, batch, INPUT, generator=g).to(dtype) for _ in range(steps)]
    if loss == "mse_scalar":
        ys = [torch.randn(members, batch, generator=g).to(dtype) for _ in range(steps)]
    else:
        ys = [torch.randint(0, n_out, (members, batch), generator=g) for _ in range(steps)]
    return xs, ys


def _state(model, opt):
    tensors = dict(model.state_dict())
    tensors.update({f"momentum.{i}": b for i, b in enumerate(opt.buffers)})
    return tensors


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


HYPER = {  # per member: lr, momentum, weight decay, nesterov
    "sgd": ([0.1, 0.05, 0.2], [0.0] * 3, [0.0, 5e-4, 1e-2], [False] * 3),
    "momentum": ([0.05, 0.1, 0.02], [0.9, 0.5, 0.0], [1e-3, 0.0, 5e-4], [False] * 3),
    "nesterov": ([0.05, 0.02, 0.1], [0.9, 0.9, 0.8], [5e-4, 1e-3, 0.0], [True, True, False]),
}

VARIANTS = [  # (model, loss, batch)
    ({"name": "mlp-3-8"}, "cross_entropy", 16),
    ({"name": "mlp-bn-3-8"}, "cross_entropy", 16),
    ({"name": "mlp-bn-2-8", "bn_detach_var": True}, "cross_entropy", 8),
    ({"name": "mlp-bn-2-8", "activation": "leaky_relu", "bias": True}, "cross_entropy", 5),
    ({"name": "mlp-2-8", "bias": True}, "mse_onehot", 16),
    ({"name": "res-2-8"}, "cross_entropy", 16),
    ({"name": "res-bn-2-8"}, "cross_entropy", 7),
    ({"name": "res-bn-1-8", "bn_detach_var": True, "activation": "leaky_relu"}, "cross_entropy", 16),
    ({"name": "twolayer-8"}, "mse_scalar", 16),
    ({"name": "twolayer-8"}, "cross_entropy", 16),
    # batch sizes outside the compiled ones (the general path: vectors of the batch plus a partial one)
    ({"name": "mlp-bn-3-8"}, "cross_entropy", 24),
    ({"name": "mlp-2-8", "bias": True, "activation": "leaky_relu"}, "mse_onehot", 64),
    ({"name": "res-bn-2-8", "bias": True}, "cross_entropy", 100),
    # (with mse_onehot this one is chaotic: a rounding difference grows to 1e-7 by step 50)
    ({"name": "mlp-bn-2-8", "bn_detach_var": True, "bias": True}, "cross_entropy", 128),
    ({"name": "twolayer-8"}, "mse_scalar", 50),
    # wide: the products' blocks over the summed index, the weight update's column panels
    ({"name": "mlp-bn-2-300", "bias": True}, "cross_entropy", 100),
    ({"name": "res-1-300"}, "cross_entropy", 128),
]


def _compare(model, loss, batch, hyper, steps=50, change_lr_at=20, drop_at=35, perturb=None):
    """The native step against the eager step in float64 over ``steps`` steps: a schedule change
    at ``change_lr_at``, member 1 dropped at ``drop_at``. Returns the largest difference of
    parameters, running statistics and momentum buffers, and of the losses."""
    lr, momentum, wd, nesterov = hyper
    n_out = 1 if loss == "mse_scalar" else 10
    seeds = [3, 4, 5]
    eager = _cohort(model, seeds, torch.float64, lr, momentum, wd, nesterov, n_out)
    hyper_native = (lr, momentum, perturb(wd) if perturb else wd, nesterov)
    nat = _cohort(model, seeds, torch.float64, *hyper_native, n_out=n_out)
    xs, ys = _data(3, batch, steps, n_out, loss, torch.float64)
    worst_loss, plan = 0.0, None
    for s, (x, y) in enumerate(zip(xs, ys)):
        if s == change_lr_at:
            for _, opt in (eager, nat):
                opt.set_lr([v * 0.1 for v in lr])
        if s == drop_at:
            keep = torch.tensor([0, 2])
            for m, opt in (eager, nat):
                for module in m.modules():
                    for name, p in module._parameters.items():
                        if p is not None:
                            p.data = p.data[keep]
                    for name, b in module._buffers.items():
                        if b is not None:
                            module._buffers[name] = b[keep]
                m.members = 2
                opt.select(keep)
        if s >= drop_at:
            x, y = x[[0, 2]], y[[0, 2]]
        loss_e = _eager_step(*eager, x, y, loss)
        plan = native.plan(nat[0], nat[1], loss, plan)
        loss_n = plan.step(x, y, threads=1)
        worst_loss = max(worst_loss, (loss_e - loss_n).abs().max().item())
    return _max_diff(_state(*eager), _state(*nat)), worst_loss


def _variant_id(variant):
    model, loss, batch = variant
    return "-".join([*map(str, model.values()), loss, f"B{batch}"])


@needs_native
@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("optimizer", list(HYPER))
def test_native_step_equals_the_eager_step_in_float64(variant, optimizer):
    model, loss, batch = variant
    params, losses = _compare(model, loss, batch, HYPER[optimizer])
    assert params < 1e-10, params
    assert losses < 1e-10, losses


@needs_native
def test_a_wrong_hyperparameter_fails_the_comparison():
    """The comparison can fail: the native cohort with one member's weight decay off by 1 %."""
    model, loss, batch = VARIANTS[1]
    perturb = lambda wd: [wd[0], wd[1], wd[2] * 1.01]
    params, _ = _compare(model, loss, batch, HYPER["sgd"], perturb=perturb)
    assert params > 1e-8, params


def _native_run(model, seeds, hyper_of, x, y, threads, loss="cross_entropy"):
    """Train the members ``seeds`` natively in float32 on their rows of ``x``/``y`` (indexed by seed)."""
    rows = [hyper_of[s] for s in seeds]
    lr, mom, wd, nest = (list(v) for v in zip(*rows))
    m, opt = _cohort(model, seeds, torch.float32, lr, mom, wd, nest)
    plan = None
    losses = []
    for xb, yb in zip(x, y):
        plan = native.plan(m, opt, loss, plan)
        losses.append(plan.step(xb[seeds], yb[seeds], threads=threads))
    return _state(m, opt), torch.stack(losses)


@needs_native
@pytest.mark.parametrize(
    "model, batch",
    [
        ({"name": "mlp-bn-3-24"}, 16),
        ({"name": "res-bn-1-20", "bias": True}, 16),
        ({"name": "mlp-2-20", "activation": "leaky_relu"}, 16),
        ({"name": "mlp-bn-3-24"}, 100),
        ({"name": "res-bn-1-20", "bias": True}, 128),
        ({"name": "mlp-2-20", "activation": "leaky_relu"}, 50),
        ({"name": "mlp-bn-2-300", "bias": True}, 100),
    ],
    ids=lambda v: v["name"] if isinstance(v, dict) else f"B{v}",
)
def test_a_member_alone_equals_itself_in_a_cohort_bit_for_bit(model, batch):
    """float32, 20 steps: member 2 alone at 1 thread = member 2 at position 3 of a cohort of 4 at 1
    and 2 threads (the others with other hyperparameters, momentum, Nesterov)."""
    hyper_of = {
        0: (0.1, 0.9, 5e-4, True),
        1: (0.05, 0.0, 0.0, False),
        2: (0.1, 0.9, 1e-3, False),
        3: (0.2, 0.5, 0.0, True),
    }
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(4, batch, INPUT, generator=g) for _ in range(20)]
    y = [torch.randint(0, 10, (4, batch), generator=g) for _ in range(20)]
    # put member 2's data where each cohort reads it
    alone, alone_losses = _native_run(model, [2], hyper_of, x, y, threads=1)
    for threads in (1, 2):
        order = [1, 3, 0, 2]
        cohort, cohort_losses = _native_run(model, order, hyper_of, x, y, threads=threads)
        assert torch.equal(alone_losses[:, 0], cohort_losses[:, 3])
        for name, value in alone.items():
            if name.startswith("momentum."):
                continue  # member 2 alone has buffers too (momentum 0.9): compared below
            assert torch.equal(value[0], cohort[name][3]), (threads, name)
        for i in range(len([k for k in alone if k.startswith("momentum.")])):
            assert torch.equal(alone[f"momentum.{i}"][0], cohort[f"momentum.{i}"][3]), (threads, i)


def test_the_forced_fallback_is_unavailable_with_its_reason():
    code = "from rankbias import native; print(native.available(), native.available(), repr(native.reason()))"
    for env, expected in (
        ({"RANKBIAS_NATIVE": "0"}, "RANKBIAS_NATIVE=0"),
        ({"CXX": "/nonexistent/g++"}, "no C++ compiler"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            env={**_env(), **env},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("False False"), done.stdout
        assert expected in done.stdout
        assert done.stderr.count("native training step unavailable") == 1, done.stderr  # one notice


def test_a_failed_build_is_unavailable(tmp_path):
    """A compiler that fails: unavailable, the reason says the build failed, nothing left in the cache."""
    fake = tmp_path / "fake-g++"
    fake.write_text("#!/bin/sh\necho 'fake 1.0'\n[ \"$1\" = --version ] && exit 0\necho 'error: no' >&2\nexit 1\n")
    fake.chmod(0o755)
    code = "from rankbias import native; print(native.available(), repr(native.reason()))"
    env = {**_env(), "CXX": str(fake), "RANKBIAS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.startswith("False"), (done.stdout, done.stderr)
    assert "build failed" in done.stdout
    assert not [p for p in (tmp_path / "cache" / "native").iterdir() if p.suffix == ".so"]


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k not in ("RANKBIAS_NATIVE", "CXX")}


# -- the engine's native path ----------------------------------------------------------------------
def _provenance(results, config) -> dict:
    import json

    return json.loads((results / config.run_id() / "provenance.json").read_text())


def _grid():
    from .conftest import small_config

    return [
        small_config(),
        small_config(**{"train.seed": 7, "optimizer.lr": 0.1, "optimizer.nesterov": True}),
        small_config(**{"train.seed": 3, "optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0}),
    ]


@needs_native
def test_the_native_engine_trains_a_member_alone_as_in_its_cohort(tmp_path):
    """Records bit for bit: a cohort of 3 at 2 threads against each run alone at 1 thread."""
    from .test_engine import assert_same_records

    configs = _grid()
    runs = rb.train(configs, tmp_path / "cohort", native=True, jobs=1, threads=2)
    assert [r.state for r in runs] == ["done"] * 3
    for config in configs:
        rb.train(config, tmp_path / "solo", native=True, jobs=1, threads=1)
        assert_same_records(tmp_path / "cohort", tmp_path / "solo", config.run_id())
        assert _provenance(tmp_path / "cohort", config)["training_path"] == "native"


@needs_native
def test_a_killed_native_run_resumes_on_the_native_path_exactly(tmp_path, monkeypatch):
    """Killed in epoch 3 of 4, resumed without asking for native: it goes on natively (its
    checkpoints say so) and its records equal the uninterrupted run's, bit for bit."""
    from .test_engine import Killed, assert_same_records, kill_in_epoch

    configs = [c.replace(**{"train.epochs": 4}) for c in _grid()[:2]]
    rb.train(configs, tmp_path / "straight", native=True, jobs=1, threads=1)
    original = kill_in_epoch(monkeypatch, 3)
    with pytest.raises(Killed):
        rb.train(configs, tmp_path / "killed", native=True, jobs=1, threads=1)
    monkeypatch.setattr(CohortTrainer, "_train_epoch", original)
    runs = rb.train(configs, tmp_path / "killed", native=False, jobs=1, threads=1)
    assert [r.state for r in runs] == ["done", "done"]
    for config in configs:
        assert_same_records(tmp_path / "straight", tmp_path / "killed", config.run_id())
        record = _provenance(tmp_path / "killed", config)
        assert record["training_path"] == "native" and record["sessions"] == 2


@needs_native
def test_sigkill_and_rerun_on_the_native_path_gives_the_uninterrupted_records(tmp_path):
    from .test_engine import assert_same_records
    from .test_faults import command, environment, kill_when, records_on_disk

    config = tmp_path / "sweep.yaml"
    config.write_text(
        "model: mlp-bn-2-16\ndata: {name: digits, train_size: 256, test_size: 64}\n"
        "optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 5.0e-3}\ntrain: {epochs: 12, batch_size: 16}\n"
        "sweep:\n  seeds: 2\n"
    )
    configs = rb.load_configs(config)
    rb.train(configs, tmp_path / "straight", native=True, jobs=1, threads=1)
    results = tmp_path / "results"
    cmd = command(config, results, "--native")
    assert kill_when(cmd, environment(tmp_path), results, lambda: records_on_disk(results) >= 6)
    states = [(RunStore(results, c.run_id()).status() or {}).get("state") for c in configs]
    assert states.count("done") < len(configs)  # the kill interrupted the sweep
    runs = rb.train(configs, results, native=True, jobs=1, threads=1)
    assert [r.state for r in runs] == ["done", "done"]
    for c in configs:
        assert_same_records(tmp_path / "straight", results, c.run_id())
        assert _provenance(results, c)["training_path"] == "native"


@pytest.fixture
def no_native(monkeypatch):
    monkeypatch.setenv("RANKBIAS_NATIVE", "0")
    native.reset()
    yield
    native.reset()


def test_native_asked_for_where_it_cannot_run_trains_eagerly(tmp_path, no_native, capsys):
    """The forced fallback (RANKBIAS_NATIVE=0) and an unsupported activation: the eager path, the
    same records as without native, recorded as eager in the provenance, one notice."""
    from .conftest import small_config
    from .test_engine import assert_same_records

    config = small_config(**{"train.epochs": 1})
    rb.train(config, tmp_path / "eager", jobs=1, threads=1)
    rb.train(config, tmp_path / "asked", native=True, jobs=1, threads=1)
    assert_same_records(tmp_path / "eager", tmp_path / "asked", config.run_id())
    assert _provenance(tmp_path / "asked", config)["training_path"] == "eager"
    assert "RANKBIAS_NATIVE=0" in capsys.readouterr().err
    gelu = small_config(**{"train.epochs": 1, "model.activation": "gelu"})
    native.reset()
    from unittest import mock

    with mock.patch.dict("os.environ", {"RANKBIAS_NATIVE": "1"}):
        rb.train(gelu, tmp_path / "gelu", native=True, jobs=1, threads=1)
    assert _provenance(tmp_path / "gelu", gelu)["training_path"] == "eager"
    assert "activation gelu" in capsys.readouterr().err
