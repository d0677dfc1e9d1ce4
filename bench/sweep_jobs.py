"""Worker processes against threads: the demo sweep (examples/demo.yaml: mlp-bn-4-64 on digits,
6 runs in 3 cohorts) with fewer epochs, trained as ``jobs × threads`` = 2 × 1 and 1 × 2, each
into a fresh directory, alternating, ``--repeat`` times. Prints every wall time, then the
minimum and median of each setting. Wall time includes starting the worker processes.

    python bench/sweep_jobs.py [--epochs 40] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import rankbias as rb

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"2 processes x 1 thread": {"jobs": 2, "threads": 1}, "1 process x 2 threads": {"jobs": 1, "threads": 2}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configs = rb.load_configs(ROOT / "examples" / "demo.yaml", [f"train.epochs={args.epochs}", "schedule.milestones=[1000]"])
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for i in range(args.repeat):
        for name, setting in SETTINGS.items():
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                rb.train(configs, Path(tmp) / "results", **setting)
                times[name].append(time.perf_counter() - start)
            print(f"repeat {i}: {name}: {times[name][-1]:.2f} s", flush=True)
    for name, values in times.items():
        print(f"{name:24s} min {min(values):6.2f} s   median {statistics.median(values):6.2f} s   max {max(values):6.2f} s")


if __name__ == "__main__":
    main()
