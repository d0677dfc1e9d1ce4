r"""Throughput of the cohort engine against a plain PyTorch loop, in one process.

Cases (``--case``):

- ``mlp``: 16 configurations of mlp-bn-10-100 (4 learning rates × 4 weight decays) on
  784-dimensional synthetic data, batch 16;
- ``convnet``: 8 configurations of convnet-3-64 on the bundled digits resized to 32×32, batch 16;
- ``resnet18``: 4 configurations of a ResNet-18 of base width 16 on the same images, batch 16.

The reference trains the configurations one after another as a user would write it (the same
architecture as a plain ``torch.nn`` module, ``torch.optim.SGD``, data indexed on the device);
the engine trains them as one cohort (one epoch of its training loop). Both do the same steps;
neither evaluates or records.

    python bench/throughput.py [--case mlp] [--runs N] [--steps 200] [--repeats 3] [--threads 2] \
        [--device cpu] [--update auto]

``--update``: ``fused`` (the cohort linear layers update their weights in their backward),
``unfused`` (every update in ``CohortSGD.step``) or ``auto`` (the engine's default for the device).
``--graph``: on a GPU, ``on``/``off`` replays the engine's step from a CUDA graph or not
(``auto``: the engine's default, on where the step can be captured).

Prints the machine, threads, run-steps per second of both (min and median over repeats) and the
ratio of the medians and of the best times.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import rankbias as rb
from rankbias.data import load_dataset
from rankbias.models import plain_model
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member

BATCH = 16
CASES = {
    "mlp": ({"name": "mlp-bn-10-100"}, {"name": "synthetic", "synthetic": {"dim": 784, "classes": 10}}, 16),
    "convnet": ({"name": "convnet-3-64"}, {"name": "digits", "resize": 32}, 8),
    "resnet18": ({"name": "resnet18", "width": 16}, {"name": "digits", "resize": 32}, 4),
}


def configs(case: str, steps: int, runs: int = 0) -> list[rb.RunConfig]:
    """The case's first ``runs`` configurations (0: all of the case's)."""
    model, data, count = CASES[case]
    runs = runs or count
    size = steps * BATCH if data["name"] == "synthetic" else min(steps * BATCH, 1497)
    base = rb.RunConfig.from_dict(
        {
            "model": model,
            "data": {**data, "train_size": size, "test_size": 16},
            "train": {"batch_size": BATCH, "epochs": 1},
        }
    )
    grid = [(lr, wd) for lr in (0.01, 0.03, 0.1, 0.3) for wd in (0.0, 1e-4, 5e-4, 2e-3)][:runs]
    return [
        base.replace(**{"optimizer.lr": lr, "optimizer.weight_decay": wd, "train.seed": i})
        for i, (lr, wd) in enumerate(grid)
    ]


def reference_loop(runs: list[rb.RunConfig], data, device: torch.device) -> float:
    """One run after another, the way a user writes it. Returns seconds."""
    x, y = data.x_train, data.y_train
    start = time.perf_counter()
    for config in runs:
        model = plain_model(config.model, data.input_shape, data.num_classes, seed=config.train.seed).to(device)
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


SETTING: dict[str, bool] = {}  # what the engine chose: fused update, CUDA graph


def cohort_engine(
    runs: list[rb.RunConfig],
    data,
    device: torch.device,
    results: str,
    fused: bool | None = None,
    graph: bool | None = None,
) -> float:
    """All runs as one cohort: one epoch of the engine's training loop (after one epoch of
    warm-up, which also captures the CUDA graph). Returns seconds."""
    trainer = CohortTrainer(
        [Member(c, RunStore(results, c.run_id())) for c in runs],
        data,
        EngineOptions(device=str(device), fused_update=fused, cuda_graph=graph),
    )
    SETTING.update(fused_update=trainer.fused_update, cuda_graph=trainer.graphed is not None)
    trainer._train_epoch()
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
    parser.add_argument("--case", choices=list(CASES), default="mlp")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--update", choices=["auto", "fused", "unfused"], default="auto", help="the engine's SGD update"
    )
    parser.add_argument(
        "--graph", choices=["auto", "on", "off"], default="auto", help="the engine's CUDA graph (GPU only)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        choices=range(1, 17),
        metavar="N",
        default=0,
        help="the case's first N configurations (default: the case's count; 1 = a single run)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fused = {"auto": None, "fused": True, "unfused": False}[args.update]
    runs = configs(args.case, args.steps, args.runs)
    data = load_dataset(runs[0].data).to(device)
    run_steps = len(runs) * (len(data.x_train) // BATCH)
    reference, engine = [], []
    with tempfile.TemporaryDirectory() as results:
        for _ in range(args.repeats):
            reference.append(reference_loop(runs, data, device))
            engine.append(
                cohort_engine(
                    runs, data, device, results, fused=fused, graph={"auto": None, "on": True, "off": False}[args.graph]
                )
            )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{args.case}: {runs[0].model.name}, {len(runs)} runs x {len(data.x_train) // BATCH} steps, batch {BATCH}")
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"repeats {args.repeats}, update {'fused' if SETTING['fused_update'] else 'unfused'}, "
        f"cuda graph {'on' if SETTING['cuda_graph'] else 'off'}"
    )
    for label, times in (
        ("reference loop (torch.nn + torch.optim.SGD, one run after another)", reference),
        (f"cohort engine ({len(runs)} runs as one model)", engine),
    ):
        print(
            f"{label:<70} median {run_steps / statistics.median(times):8.0f}  "
            f"best {run_steps / min(times):8.0f} run-steps/s"
        )
    print(
        f"ratio engine / reference: median {statistics.median(reference) / statistics.median(engine):.2f}x, "
        f"best {min(reference) / min(engine):.2f}x"
    )


if __name__ == "__main__":
    main()
