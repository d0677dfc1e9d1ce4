"""Worker processes against threads, and threads for one training process on a busy machine.

``--case sweep`` (default): the demo sweep (examples/demo.yaml: mlp-bn-4-64 on digits, 6 runs in
3 cohorts) with fewer epochs, trained as ``jobs × threads`` = 2 × 1 and 1 × 2, each into a fresh
directory, alternating, ``--repeat`` times. Wall time includes starting the worker processes.

``--case mlp`` / ``--case conv``: one run trained in the calling process (what ``rankbias run``
does for a single run, ``--jobs 1`` or a one-cohort sweep): the demo's mlp-bn-4-64 at batch 32, or
examples/convnet_digits.yaml's convnet-3-64 at batch 16, at each of ``--threads`` (1 and 2),
alternating. ``--busy K`` starts K competing busy processes (``while True: pass``, each one
core's worth of work, as another user's job would be) for the whole measurement and kills them
at the end.

Prints the machine, torch version, threads, the load average (``os.getloadavg``) before each
repeat, every wall time (after one untimed 1-epoch warm-up run), then the minimum and median
of each setting.

    python bench/sweep_jobs.py [--case sweep|mlp|conv] [--epochs 40] [--repeat 5] [--busy 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import rankbias as rb
from rankbias.store.provenance import _cpu_name
from rankbias.sweep import cores

ROOT = Path(__file__).resolve().parents[1]
SWEEP_SETTINGS = {
    "2 processes x 1 thread": {"jobs": 2, "threads": 1},
    "1 process x 2 threads": {"jobs": 1, "threads": 2},
}
# one run of each example: (file, the swept values kept)
SINGLE = {
    "mlp": ("demo.yaml", ["train.batch_size=32", "optimizer.weight_decay=5.0e-3"]),
    "conv": ("convnet_digits.yaml", ["optimizer.weight_decay=5.0e-3"]),
}


def configs_for(case: str, epochs: int) -> list:
    common = [f"train.epochs={epochs}", "schedule.milestones=[1000]"]
    if case == "sweep":
        return rb.load_configs(ROOT / "examples" / "demo.yaml", common)
    name, keep = SINGLE[case]
    return rb.load_configs(ROOT / "examples" / name, common + keep)


def settings_for(case: str, threads: list[int]) -> dict[str, dict]:
    if case == "sweep":
        return SWEEP_SETTINGS
    return {f"inline, {t} thread{'s' * (t > 1)}": {"jobs": 1, "threads": t} for t in threads}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["sweep", *SINGLE], default="sweep")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (mlp, conv)")
    parser.add_argument("--busy", type=int, default=0, help="competing busy processes during the measurement")
    args = parser.parse_args()
    configs = configs_for(args.case, args.epochs)
    settings = settings_for(args.case, [int(t) for t in args.threads.split(",")])
    print(
        f"machine: {platform.node()}, {_cpu_name()}, {cores()} cores; torch {torch.__version__}; "
        f"case {args.case} ({len(configs)} run(s), {args.epochs} epochs); competing busy processes: {args.busy}",
        flush=True,
    )
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    times: dict[str, list[float]] = {name: [] for name in settings}
    try:
        with tempfile.TemporaryDirectory() as tmp:  # warm-up, not timed: imports, data set, first-call allocations
            rb.train(configs_for(args.case, 1), Path(tmp) / "results", jobs=1, threads=1)
        for i in range(args.repeat):
            for name, setting in settings.items():
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    rb.train(configs, Path(tmp) / "results", **setting)
                    times[name].append(time.perf_counter() - start)
                print(f"repeat {i}: {name}: {times[name][-1]:.2f} s  (load {load:.2f})", flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for name, values in times.items():
        print(
            f"{name:24s} min {min(values):7.2f} s   median {statistics.median(values):7.2f} s   "
            f"max {max(values):7.2f} s"
        )


if __name__ == "__main__":
    main()
