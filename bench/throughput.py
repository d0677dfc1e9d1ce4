"""Throughput of the cohort engine against a plain PyTorch loop, in one process.

16 configurations of mlp-bn-10-100 (4 learning rates × 4 weight decays) on 784-dimensional
synthetic data, batch 16, a fixed number of steps each. The reference trains them one after
another as a user would write it (nn.Sequential, torch.optim.SGD, data indexed on the device);
the engine trains them as one cohort. Both do the same steps; neither evaluates or records.

    python bench/throughput.py [--steps 200] [--repeats 3] [--device cpu]

Prints run-steps per second for both and their ratio (the best of ``repeats`` for each).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

import rankbias as rb
from rankbias.data import load_dataset
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member

BATCH, WIDTH, DEPTH, DIM, CLASSES = 16, 100, 10, 784, 10


def configs(steps: int) -> list[rb.RunConfig]:
    base = {
        "model": f"mlp-bn-{DEPTH}-{WIDTH}",
        "data": {"name": "synthetic", "train_size": steps * BATCH, "test_size": 16, "synthetic": {"dim": DIM, "classes": CLASSES}},
        "train": {"batch_size": BATCH, "epochs": 1},
    }
    grid = [(lr, wd) for lr in (0.01, 0.03, 0.1, 0.3) for wd in (0.0, 1e-4, 5e-4, 2e-3)]
    return [rb.RunConfig.from_dict(base).replace(**{"optimizer.lr": lr, "optimizer.weight_decay": wd, "train.seed": i}) for i, (lr, wd) in enumerate(grid)]


def reference_loop(runs: list[rb.RunConfig], x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """One run after another, the way a user writes it. Returns seconds."""
    start = time.perf_counter()
    for config in runs:
        torch.manual_seed(config.train.seed)
        layers, width_in = [], DIM
        for _ in range(DEPTH):
            layers += [nn.Linear(width_in, WIDTH, bias=False), nn.BatchNorm1d(WIDTH), nn.ReLU()]
            width_in = WIDTH
        model = nn.Sequential(nn.Flatten(), *layers, nn.Linear(WIDTH, CLASSES, bias=False)).to(device)
        opt = config.optimizer
        sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
        order = torch.randperm(len(x), device=device)
        for s in range(len(x) // BATCH):
            index = order[s * BATCH : (s + 1) * BATCH]
            loss = F.cross_entropy(model(x[index]), y[index])
            sgd.zero_grad()
            loss.backward()
            sgd.step()
    _sync(device)
    return time.perf_counter() - start


def cohort_engine(runs: list[rb.RunConfig], data, device: torch.device, results: str) -> float:
    """All runs as one cohort: one epoch of the engine's training loop. Returns seconds."""
    trainer = CohortTrainer([Member(c, RunStore(results, c.run_id())) for c in runs], data, device)
    _sync(device)
    start = time.perf_counter()
    trainer._train_epoch()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runs = configs(args.steps)
    data = load_dataset(runs[0].data).to(device)
    run_steps = len(runs) * args.steps
    reference, engine = [], []
    with tempfile.TemporaryDirectory() as results:
        for _ in range(args.repeats):
            reference.append(reference_loop(runs, data.x_train, data.y_train, device))
            engine.append(cohort_engine(runs, data, device, results))
    ref_rate, engine_rate = run_steps / min(reference), run_steps / min(engine)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {len(runs)} runs x {args.steps} steps, batch {BATCH}")
    print(f"reference loop (nn.Module + torch.optim.SGD, one run after another): {ref_rate:8.0f} run-steps/s")
    print(f"cohort engine ({len(runs)} runs as one model):                        {engine_rate:8.0f} run-steps/s")
    print(f"ratio engine / reference: {engine_rate / ref_rate:.1f}x")


if __name__ == "__main__":
    main()
