"""Which way to run a cohort of convolutional networks is fastest on this machine?

One training step (forward + backward, batch 16) of R networks, three ways, in one process:

- ``folded``: rankbias's cohort model, members folded into channels, grouped convolutions (groups = R);
- ``member``: rankbias's cohort model calling one plain network per member on its slice of the
  stacked parameters (``functional_call``; the ``loop`` strategy, the default on a CPU);
- ``loop``: R plain ``torch.nn`` networks one after another (what a user's loop does per step);
- ``vmap``: ``torch.func.vmap`` of ``functional_call`` over the R networks' stacked parameters
  (batch norm without running statistics, which vmap cannot update in place).

    python bench/conv_strategies.py [--members 8] [--repeats 5] [--threads 2]

Prints, per model, the median and min step time of each way and their ratio to ``loop``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

import rankbias as rb
from rankbias.models import build_model

CASES = {
    "convnet-3-64 (1×32×32)": ({"name": "convnet-3-64"}, (1, 32, 32)),
    "resnet18 width 16 (3×32×32)": ({"name": "resnet18", "width": 16}, (3, 32, 32)),
    "vgg16 width 16 (3×32×32)": ({"name": "vgg16", "width": 16}, (3, 32, 32)),
    "vit width 64 (3×32×32)": ({"name": "vit", "width": 64, "dropout": 0.0}, (3, 32, 32)),
}


def timed(step, repeats: int) -> list[float]:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"R = {args.members}, B = {args.batch}"
    )
    print(f"{'model':<30} {'way':<7} {'median ms':>10} {'min ms':>8} {'× loop':>7}")
    for label, (model, shape) in CASES.items():
        measure(label, rb.RunConfig.from_dict({"model": model}).model, shape, args.members, args.batch, args.repeats)


def measure(label: str, config, shape: tuple[int, ...], R: int, B: int, repeats: int) -> None:
    """Time one step of each way for R networks of ``config`` and print a row per way."""
    cohort, member = (
        build_model(config, R, shape, 10, strategy="folded"),
        build_model(config, R, shape, 10, strategy="loop"),
    )
    for r in range(R):
        cohort.reset_member(r, torch.Generator().manual_seed(r))
    member.load_state_dict(cohort.state_dict())
    plains = [cohort.member_module(r) for r in range(R)]
    x, y = torch.randn(R, B, *shape), torch.randint(0, 10, (R, B))

    def cohort_step():
        out = cohort(x)
        F.cross_entropy(out.reshape(R * B, -1), y.reshape(-1), reduction="sum").backward()

    def member_step():
        out = member(x)
        F.cross_entropy(out.reshape(R * B, -1), y.reshape(-1), reduction="sum").backward()

    def loop_step():
        for r, net in enumerate(plains):
            F.cross_entropy(net(x[r]), y[r], reduction="sum").backward()

    base = copy.deepcopy(plains[0])
    for m in base.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    params, buffers = stack_module_state(plains)
    buffers = {k: v for k, v in buffers.items() if "running" not in k and "num_batches" not in k}

    def loss(p, b, xr, yr):
        return F.cross_entropy(functional_call(base, (p, b), (xr,)), yr, reduction="sum")

    vmapped = vmap(grad(loss), in_dims=(0, 0, 0, 0))

    def vmap_step():
        vmapped(params, buffers, x, y)

    results = {
        way: timed(step, repeats)
        for way, step in (("loop", loop_step), ("folded", cohort_step), ("member", member_step), ("vmap", vmap_step))
    }
    loop_median = statistics.median(results["loop"])
    for way, times in results.items():
        median = statistics.median(times)
        print(f"{label:<30} {way:<7} {median * 1e3:>10.1f} {min(times) * 1e3:>8.1f} {loop_median / median:>7.2f}")


if __name__ == "__main__":
    main()
