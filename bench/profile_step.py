"""Where a cohort training step spends its time: ``torch.profiler`` over one epoch of the engine.

Prints the ops of ``bench/throughput.py``'s case (after a warm-up epoch) sorted by their own CPU
time, per training step, with their input shapes: what to look at before removing per-op
overhead (allocations, transposes, Python work per layer).

    python bench/profile_step.py [--case mlp] [--steps 100] [--threads 1] [--top 30]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from throughput import CASES, configs
from torch.profiler import ProfilerActivity, profile

from rankbias.data import load_dataset
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="mlp")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = configs(args.case, args.steps)
    data = load_dataset(runs[0].data)
    with tempfile.TemporaryDirectory() as results:
        trainer = CohortTrainer(
            [Member(c, RunStore(results, c.run_id())) for c in runs], data, EngineOptions(device="cpu")
        )
        trainer._train_epoch()
        steps = len(data.x_train) // runs[0].train.batch_size
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            trainer._train_epoch()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    aten = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    print(
        f"{args.case}: {len(runs)} runs, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"profiled {total:.2f} ms per step, {aten:.0f} aten ops per step"
    )
    print(f"{'ms/step':>8} {'calls':>6}  op, input shapes")
    for e in events[: args.top]:
        print(
            f"{e.self_cpu_time_total / 1e3 / steps:8.3f} {e.count / steps:6.1f}  "
            f"{e.key[:45]:45s} {str(e.input_shapes)[:70]}"
        )


if __name__ == "__main__":
    main()
