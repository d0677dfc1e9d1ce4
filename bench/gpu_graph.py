"""The engine's GPU path, checked and timed on a CUDA device (run by ``bench/gpu_check.sh``).

1. **Graph = eager.** A cohort of 4 mlp-bn-3-32 runs (3 epochs, a partial last batch, a
   learning-rate milestone, one member diverging in epoch 1) trained with the step replayed from
   a CUDA graph and eagerly: every record and the final checkpoints must agree to 1e-5
   (the same kernels in the same order). Also counts the graph captures (the lr change and the
   dropped member each force one).
2. **TF32 is off unless asked**: the trainer leaves ``allow_tf32`` False by default, True with
   ``tf32=True``.
3. **A CIFAR-10-sized epoch**: one run of mlp-bn-10-100 on 50,000 3072-dimensional samples at
   B = 16 (3,125 steps), graph and eager, the median of 3 epochs after a warm-up epoch.

    python bench/gpu_graph.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

import rankbias as rb
from rankbias.data import load_dataset
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member

DEVICE = torch.device("cuda")


def train(configs, results: Path, graph: bool) -> CohortTrainer:
    data = load_dataset(configs[0].data)
    trainer = CohortTrainer(
        [Member(c, RunStore(results, c.run_id())) for c in configs],
        data,
        EngineOptions(device=str(DEVICE), cuda_graph=graph),
    )
    trainer.run()
    return trainer


def check_graph_equals_eager() -> None:
    base = rb.RunConfig.from_dict(
        {
            "model": {"name": "mlp-bn-3-32"},
            "data": {"name": "synthetic", "synthetic": {"dim": 64, "classes": 10}, "train_size": 500, "test_size": 100},
            "train": {"batch_size": 48, "epochs": 3, "drop_last": False},
            "schedule": {"kind": "multistep", "milestones": [1], "factor": 0.5},
            "optimizer": {"momentum": 0.9},
        }
    )
    configs = [base.replace(**{"optimizer.lr": lr, "train.seed": i}) for i, lr in enumerate((0.01, 0.05, 0.1, 1e6))]
    with tempfile.TemporaryDirectory() as tmp:
        graphed = train(configs, Path(tmp) / "graph", True)
        train(configs, Path(tmp) / "eager", False)
        a, b = rb.load(Path(tmp) / "graph"), rb.load(Path(tmp) / "eager")
        states = {
            s: [RunStore(Path(tmp) / s, c.run_id()).load_checkpoint() for c in configs] for s in ("graph", "eager")
        }
    numeric = ["batch_loss", "train_loss", "test_loss", "train_acc", "test_acc", "avg_rank"]
    sa, sb = (r.scalars.sort_values(["run_id", "epoch"]).reset_index(drop=True) for r in (a, b))
    assert len(sa) == len(sb) and list(sa.run_id) == list(sb.run_id), "different records"
    scalar_diff = (sa[numeric] - sb[numeric]).abs().max().max()
    param_diff = max(
        (ga["params"][k] - gb["params"][k]).abs().max().item()
        for ga, gb in zip(states["graph"], states["eager"])
        if ga is not None and gb is not None
        for k in ga["params"]
    )
    status = sorted(a.runs["state"])
    print(
        f"graph = eager: records {len(sa)}, max |scalar diff| {scalar_diff:.2e}, max |param diff| {param_diff:.2e}, "
        f"captures {graphed.graphed.captures}, status {status}"
    )
    assert scalar_diff <= 1e-5 and param_diff <= 1e-5, "the CUDA graph step differs from the eager step"
    assert graphed.graphed.captures >= 2, "the lr change or the dropped member did not recapture"
    assert status.count("diverged") == 1, "the lr = 1e6 member should diverge"


def check_tf32_default() -> None:
    configs = [rb.RunConfig.from_dict({"model": {"name": "mlp-bn-2-16"}, "data": {"name": "digits"}})]
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(configs[0].data)
        CohortTrainer([Member(configs[0], RunStore(tmp, configs[0].run_id()))], data, EngineOptions(device=str(DEVICE)))
        off = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        CohortTrainer(
            [Member(configs[0], RunStore(tmp, configs[0].run_id()))], data, EngineOptions(device=str(DEVICE), tf32=True)
        )
        on = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    print(f"tf32 default {off}, tf32=True {on}")
    assert off == (False, False) and on == (True, True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def epoch_seconds(configs, graph: bool, repeats: int = 3) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(configs[0].data)
        trainer = CohortTrainer(
            [Member(c, RunStore(tmp, c.run_id())) for c in configs],
            data,
            EngineOptions(device=str(DEVICE), cuda_graph=graph),
        )
    trainer._train_epoch()  # warm-up (and capture)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer._train_epoch()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def cifar_sized_epoch() -> None:
    config = rb.RunConfig.from_dict(
        {
            "model": {"name": "mlp-bn-10-100"},
            "data": {
                "name": "synthetic",
                "synthetic": {"dim": 3072, "classes": 10},
                "train_size": 50000,
                "test_size": 100,
            },
            "train": {"batch_size": 16, "epochs": 1},
        }
    )
    for graph in (True, False):
        times = epoch_seconds([config], graph)
        print(
            f"CIFAR-10-sized epoch, mlp-bn-10-100, 1 run, B=16, 3125 steps, graph {graph}: "
            f"median {statistics.median(times):.2f} s, best {min(times):.2f} s"
        )


if __name__ == "__main__":
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    check_tf32_default()
    check_graph_equals_eager()
    cifar_sized_epoch()
