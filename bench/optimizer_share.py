"""The optimizer's share of a training step: would fusing the SGD update into a layer's backward pay?

For each case of ``bench/throughput.py`` (the cohort engine, one epoch after a warm-up epoch)
prints the share of the epoch's CPU time spent in ``CohortSGD.step``, the part a fused update
can save. The fused update of the linear layers saves more than this share: it also never
materializes the weight gradient (``docs/speed.md``).

    python bench/optimizer_share.py [--cases convnet resnet18] [--steps 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from throughput import CASES, configs

from rankbias.data import load_dataset
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member


def share(case: str, steps: int) -> tuple[float, float, int]:
    runs = configs(case, steps)
    data = load_dataset(runs[0].data)
    with tempfile.TemporaryDirectory() as results:
        trainer = CohortTrainer(
            [Member(c, RunStore(results, c.run_id())) for c in runs], data, EngineOptions(device="cpu")
        )
        step, spent = trainer.optimizer.step, [0.0]

        def timed_step() -> None:
            start = time.thread_time()
            step()
            spent[0] += time.thread_time() - start

        trainer.optimizer.step = timed_step
        trainer._train_epoch()
        spent[0] = 0.0
        start = time.thread_time()
        trainer._train_epoch()
        return spent[0], time.thread_time() - start, len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=["convnet", "resnet18"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU time of this thread")
    for case in args.cases:
        optimizer, total, runs = share(case, args.steps)
        print(f"{case}: {runs} runs, CohortSGD.step {100 * optimizer / total:.1f}% of the epoch ({total:.2f} s)")


if __name__ == "__main__":
    main()
