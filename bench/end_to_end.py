"""End to end: a small grid trained and recorded by rankbias against the same grid as a plain PyTorch loop.

The grid: mlp-bn-10-100 on 784-dimensional ``synthetic`` data (60,000 training
and 10,000 test samples, 10 classes), batch size B ∈ {16, 128} × weight decay ∈ {0, 5e-4}, lr 0.1,
2 epochs, records at epoch 0 and after every epoch. The axes are the ends of GP Fig. 3's grid
(MLP-BN-10-100, B from 16 to 128, λ = 0 as the control against the papers' 5e-4): B = 16 is where
the low-rank effect is strongest and a step is the cheapest (per-step overhead dominates), B = 128
the other end. The two batch sizes cannot share a cohort, so the engine trains 2 cohorts of 2.

- **engine**: ``rb.train(configs, fresh_dir, jobs=..., threads=...)`` (``--jobs``/``--threads``;
  default: ``rb.train``'s own defaults), its stored records (losses, accuracies, every weight
  matrix's singular values, rank measures, checkpoints) included;
- **reference**: the grid as a user writes it: one run after another, ``DataLoader(TensorDataset(
  x, y), batch_size=B, shuffle=True)``, :func:`rankbias.models.plain_model`, ``torch.optim.SGD``,
  and per record a full evaluation on the training and test sets (loss and accuracy, eval mode,
  ``no_grad``, batches of 1,000 sliced from the tensors: cheaper than a second DataLoader) plus
  ``torch.linalg.svdvals`` of every weight matrix, saved with ``torch.save``.

Both run in this process; both wall times include loading (here: generating) the data. The
reference runs with the torch thread count the engine's runs report in their provenance (the
engine's worker processes, or this process when it trains inline), so with ``--jobs 2`` the engine
may use two processes where the reference uses one: that is what the tool offers a user.

    python bench/end_to_end.py [--repeats 3] [--epochs 2] [--train-size 60000] [--jobs J] [--threads T] \
        [--device cpu] [--path default|eager|native]

``--path``: the engine's training path (``rb.train(native=None|False|True)``; default: native on
a CPU).

``--device cuda``: both on the GPU (the reference moves each batch there, as a user would, and
evaluates on the whole sets moved there once).

Prints the machine, cores, threads, jobs, torch version, the load average before each repeat,
every wall time, the min and median of each, the ratio of the medians and of the mins, and the
final test accuracies of both (a check that they trained the same grid).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import rankbias as rb
from rankbias.api import plan
from rankbias.data import load_dataset
from rankbias.models import plain_model
from rankbias.store import provenance
from rankbias.store.provenance import _cpu_name
from rankbias.sweep import cores

BATCH_SIZES = (16, 128)
WEIGHT_DECAYS = (0.0, 5e-4)
EVAL_BATCH = 1000


def grid(epochs: int, train_size: int, test_size: int) -> list[rb.RunConfig]:
    base = rb.RunConfig.from_dict({
        "model": {"name": "mlp-bn-10-100"},
        "data": {
            "name": "synthetic",
            "synthetic": {"dim": 784, "classes": 10},
            "train_size": train_size,
            "test_size": test_size,
        },
        "optimizer": {"lr": 0.1},
        "train": {"epochs": epochs},
    })  # fmt: skip
    return [
        base.replace(**{"train.batch_size": b, "optimizer.weight_decay": wd})
        for b in BATCH_SIZES
        for wd in WEIGHT_DECAYS
    ]


PATHS = {"default": None, "eager": False, "native": True}  # --path: rb.train(native=...)


def engine(
    configs: list[rb.RunConfig], results: Path, device: str, jobs: int | None, threads: int | None, path: str
) -> tuple[float, int]:
    """``rb.train`` into a fresh directory. Returns (seconds, torch threads its runs used)."""
    options = {k: v for k, v in (("jobs", jobs), ("threads", threads)) if v is not None}
    options["native"] = PATHS[path]
    start = time.perf_counter()
    runs = rb.train(configs, results, device=device, **options)
    seconds = time.perf_counter() - start
    bad = [r for r in runs if r.state != "done"]
    if bad:
        raise SystemExit(f"engine run {bad[0].run_id} ended {bad[0].state}: {bad[0].message}")
    used = {provenance.read(r.path)["torch_threads"] for r in runs}
    if len(used) != 1:
        raise SystemExit(f"the engine's runs used different thread counts: {sorted(used)}")
    ENGINE_PATHS.update(provenance.read(r.path)["training_path"] for r in runs)
    return seconds, used.pop()


ENGINE_PATHS: set[str] = set()  # the training paths the engine's runs took


def reference(configs: list[rb.RunConfig], out: Path, device: torch.device) -> tuple[float, list[float]]:
    """The grid as a plain PyTorch loop. Returns (seconds, final test accuracy of each run)."""
    start = time.perf_counter()
    data = load_dataset(configs[0].data)  # the same tensors the engine trains on
    train_set = TensorDataset(data.x_train, data.y_train)
    data = data.to(device)  # for the evaluation
    final = []
    for i, config in enumerate(configs):
        torch.manual_seed(config.train.seed)  # the DataLoader's shuffling
        model = plain_model(config.model, data.input_shape, data.num_classes, seed=config.train.seed).to(device)
        opt = config.optimizer
        sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
        loader = DataLoader(
            train_set, batch_size=config.train.batch_size, shuffle=True, drop_last=config.train.drop_last
        )
        record = _record(model, data, out / f"run{i}_epoch000.pt", 0)
        for epoch in range(1, config.train.epochs + 1):
            model.train()
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = F.cross_entropy(model(xb), yb)
                sgd.zero_grad()
                loss.backward()
                sgd.step()
            record = _record(model, data, out / f"run{i}_epoch{epoch:03d}.pt", epoch)
        final.append(record["test_acc"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, final


@torch.no_grad()
def _record(model: torch.nn.Module, data, path: Path, epoch: int) -> dict:
    """What a user who wants the papers' records stores per epoch: losses, accuracies, spectra."""
    model.eval()
    record = {"epoch": epoch}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        loss = correct = 0.0
        for s in range(0, len(x), EVAL_BATCH):
            out = model(x[s : s + EVAL_BATCH])
            loss += F.cross_entropy(out, y[s : s + EVAL_BATCH], reduction="sum").item()
            correct += (out.argmax(dim=1) == y[s : s + EVAL_BATCH]).sum().item()
        record[f"{split}_loss"], record[f"{split}_acc"] = loss / len(x), correct / len(x)
    record["singular_values"] = {name: torch.linalg.svdvals(p) for name, p in model.named_parameters() if p.ndim == 2}
    torch.save(record, path)
    model.train()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument(
        "--jobs", type=int, default=None, help="rb.train's worker processes (default: rb.train's default)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="rb.train's torch threads per worker (default: rb.train's default)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both train")
    parser.add_argument(
        "--path", choices=list(PATHS), default="default", help="the engine's training path (rb.train's native=)"
    )
    args = parser.parse_args()
    configs = grid(args.epochs, args.train_size, args.test_size)
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = [
            len(c.configs) for c in plan(configs, Path(tmp) / "plan", device=args.device, jobs=args.jobs or 1).cohorts
        ]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"machine {platform.node()}, {_cpu_name()}, {cores()} cores; device {device} ({name}); "
        f"torch {torch.__version__}; "
        f"jobs {args.jobs or 'default'}, threads {args.threads or 'default'}; cohorts of {cohorts} runs\n"
        f"grid: mlp-bn-10-100, synthetic 784-d, {args.train_size} train / {args.test_size} test, "
        f"B {list(BATCH_SIZES)} "
        f"x weight decay {list(WEIGHT_DECAYS)}, lr 0.1, {args.epochs} epochs, records at epoch 0 and after each",
        flush=True,
    )
    times: dict[str, list[float]] = {"engine": [], "reference": []}
    before = torch.get_num_threads()
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            seconds, threads = engine(configs, Path(tmp) / "results", args.device, args.jobs, args.threads, args.path)
            times["engine"].append(seconds)
            if i == 0:
                scalars = rb.load(Path(tmp) / "results").scalars
                last = scalars[scalars.epoch == args.epochs].set_index("run_id").test_acc
                engine_acc = [float(last[c.run_id()]) for c in configs]
        torch.set_num_threads(threads)  # the engine's runs' thread count
        with tempfile.TemporaryDirectory() as tmp:
            seconds, reference_acc = reference(configs, Path(tmp), device)
            times["reference"].append(seconds)
        torch.set_num_threads(before)
        print(f"repeat {i}: engine {times['engine'][-1]:7.2f} s, reference {times['reference'][-1]:7.2f} s "
              f"(torch threads {threads} each; load {load:.2f})", flush=True)  # fmt: skip
    print(f"engine training path: {', '.join(sorted(ENGINE_PATHS))} (--path {args.path})")
    for name, values in times.items():
        print(f"{name:10s} min {min(values):7.2f} s   median {statistics.median(values):7.2f} s")
    median = statistics.median(times["reference"]) / statistics.median(times["engine"])
    best = min(times["reference"]) / min(times["engine"])
    print(f"ratio reference / engine: median {median:.2f}x, min {best:.2f}x")
    print("final test accuracy, engine:    " + ", ".join(f"{a:.3f}" for a in engine_acc))
    print("final test accuracy, reference: " + ", ".join(f"{a:.3f}" for a in reference_acc))


if __name__ == "__main__":
    main()
