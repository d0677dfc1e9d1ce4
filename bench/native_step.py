r"""The native training step (``rankbias.native``) against the eager cohort engine and the plain
PyTorch loop, in one process: ``bench/throughput.py``'s cases and configurations (fully connected
only: ``--case mlp``).

The native path is the engine's own training loop (``CohortTrainer._train_epoch``, as
``bench/throughput.py`` times the eager engine) with ``EngineOptions(native=True)``: per step each
member's samples gathered with one ``index_select``, then one C++ call (``rankbias.native``) for
forward, loss, backward and update of all members; the native step runs on ``--threads`` threads
(``torch.get_num_threads()``). The three are alternated within each repeat.

    python bench/native_step.py [--case mlp] [--runs N] [--steps 200] [--repeats 5] [--threads 1]

Prints run-steps per second of each (median and best over repeats) and the ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from throughput import BATCH, cohort_engine, configs, reference_loop

from rankbias import native
from rankbias.data import load_dataset
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member


def native_loop(runs, data, results: str) -> float:
    """One epoch of the engine's training loop on its native path (``EngineOptions(native=True)``)
    for all runs as one cohort, after one epoch of warm-up. Seconds."""
    trainer = CohortTrainer(
        [Member(c, RunStore(results, c.run_id())) for c in runs], data, EngineOptions(device="cpu", native=True)
    )
    why = trainer.native_unsupported()
    if why is not None:
        sys.exit(f"the native step cannot train this case: {why}")
    trainer.path = "native"  # what CohortTrainer.run decides for new runs with native=True
    trainer._train_epoch()
    start = time.perf_counter()
    trainer._train_epoch()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["mlp"], default="mlp")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads and the native step's threads")
    parser.add_argument("--runs", type=int, choices=range(1, 17), metavar="N", default=0)
    parser.add_argument("--skip-eager", action="store_true", help="time only the plain loop and the native step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not native.available():
        sys.exit(f"the native step is not available: {native.reason()}")
    device = torch.device("cpu")
    runs = configs(args.case, args.steps, args.runs)
    data = load_dataset(runs[0].data).to(device)
    run_steps = len(runs) * (len(data.x_train) // BATCH)
    times: dict[str, list[float]] = {"reference": [], "eager": [], "native": []}
    with tempfile.TemporaryDirectory() as results:
        for _ in range(args.repeats):
            times["reference"].append(reference_loop(runs, data, device))
            if not args.skip_eager:
                times["eager"].append(cohort_engine(runs, data, device, results))
            times["native"].append(native_loop(runs, data, results))
    print(f"{args.case}: {runs[0].model.name}, {len(runs)} runs x {len(data.x_train) // BATCH} steps, batch {BATCH}")
    print(
        f"cpu {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
        f"repeats {args.repeats}, native library {native.library_path()}"
    )
    labels = {
        "reference": "reference loop (torch.nn + torch.optim.SGD, one run after another)",
        "eager": f"cohort engine, eager ({len(runs)} runs as one model)",
        "native": f"native step ({len(runs)} runs, one C++ call a step)",
    }
    ref = times["reference"]
    for key, label in labels.items():
        t = times[key]
        if not t:
            continue
        median, best = statistics.median(ref) / statistics.median(t), min(ref) / min(t)
        ratio = f"  / reference: median {median:5.2f}x, best {best:5.2f}x"
        print(
            f"{label:<70} median {run_steps / statistics.median(t):8.0f}  best {run_steps / min(t):8.0f} run-steps/s"
            + (ratio if key != "reference" else "")
        )


if __name__ == "__main__":
    main()
