"""The cost of one ``rb.Tracker`` record, against one training step of the same model, in one process.

Models (plain ``nn.Module``s from :func:`rankbias.models.plain_model`, as a user's own would be):
ResNet-18 (CIFAR variant, 11.2 M parameters, 21 matrices) on 3×32×32 inputs and MLP-BN-10-100 on
784 inputs. A *record* measures every weight matrix (batched ``svdvals`` per shape, rank
measures) and writes its Parquet files; the *step* is a plain PyTorch training step (forward,
backward, ``torch.optim.SGD`` with momentum and weight decay) at batch ``--batch``. Both are timed
``--repeats`` times after one warm-up; the table gives min and median and the ratio of the
medians: how many training steps one record costs.

    python bench/track_cost.py [--repeats 5] [--batch 128] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from torch import nn

import rankbias as rb
from rankbias.config import ModelConfig
from rankbias.models import plain_model

CASES = {"resnet18": ((3, 32, 32), 10), "mlp-bn-10-100": ((784,), 10)}


def timed(function, repeats: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{platform.node()}: {os.cpu_count()} cores, {args.threads} torch thread(s), torch {torch.__version__}, "
          f"{device}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'model':<14} {'matrices':>8} {'record min/med (s)':>20} {'step min/med (s)':>18} {'record / step':>14}")
    for name, (shape, classes) in CASES.items():
        records, steps, matrices = measure(name, shape, classes, args.batch, device, args.repeats)
        ratio = statistics.median(records) / statistics.median(steps)
        print(f"{name:<14} {matrices:>8} {min(records):>9.3f} / {statistics.median(records):<8.3f}"
              f" {min(steps):>8.3f} / {statistics.median(steps):<7.3f} {ratio:>14.1f}")  # fmt: skip


def measure(name: str, shape: tuple, classes: int, batch: int, device: torch.device, repeats: int):
    """(record times, step times, matrices) of one model."""
    model = plain_model(ModelConfig(name=name), shape, classes).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def step():
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        sync()

    with tempfile.TemporaryDirectory() as results:
        tracker = rb.Tracker(model, results, name=name, input_shape=shape)
        epochs = iter(range(10**6))

        def record():
            tracker.record(epoch=next(epochs), train_loss=0.0)
            sync()

        records = timed(record, repeats)
        tracker.close()
    return records, timed(step, repeats), len(tracker.matrices)

if __name__ == "__main__":
    main()
