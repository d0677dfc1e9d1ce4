r"""Throughput of the cohort engine (eager and native paths) against a plain PyTorch loop, in one process.

Cases (``--case``):

- ``mlp``: 16 configurations of mlp-bn-10-100 (4 learning rates × 4 weight decays) on
  784-dimensional synthetic data, batch 16;
- ``convnet``: 8 configurations of convnet-3-64 on the bundled digits resized to 32×32, batch 16;
- ``resnet18``: 4 configurations of a ResNet-18 of base width 16 on the same images, batch 16.

``--model NAME`` and ``--batch B`` replace the case's architecture and batch size (e.g.
``--case mlp --model mlp-5-500 --batch 128``: where the native step stops paying, docs/speed.md).

The reference trains the configurations one after another as a user would write it (the same
architecture as a plain ``torch.nn`` module, ``torch.optim.SGD``, data indexed on the device), at
1 thread and at ``--threads``: the **best plain loop** is the faster of the two (by median). The
engine trains them as one cohort (one epoch of its training loop), on its eager path and, for
the fully connected families on a CPU, on its native path (``rankbias.native``). All do the same
steps; none evaluates or records. Within each repeat the variants alternate.

    python bench/throughput.py [--case mlp] [--runs N] [--steps 200] [--repeats 3] [--threads T] \
        [--device cpu] [--update auto] [--model NAME] [--batch B] [--paths eager,native]

``--threads``: the engine's torch threads and the native step's (default: all cores).
``--update``: ``fused`` (the cohort linear layers update their weights in their backward),
``unfused`` (every update in ``CohortSGD.step``) or ``auto`` (the engine's default for the device).
``--graph``: on a GPU, ``on``/``off`` replays the engine's step from a CUDA graph or not
(``auto``: the engine's default, on where the step can be captured).

Prints the machine, threads, run-steps per second of each variant (median and best over
repeats) and each engine path's ratio to the best plain loop (of the medians and of the bests).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import rankbias as rb
from rankbias import native
from rankbias.data import load_dataset
from rankbias.models import plain_model, resolve
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member

CASES = {
    "mlp": ({"name": "mlp-bn-10-100"}, {"name": "synthetic", "synthetic": {"dim": 784, "classes": 10}}, 16),
    "convnet": ({"name": "convnet-3-64"}, {"name": "digits", "resize": 32}, 8),
    "resnet18": ({"name": "resnet18", "width": 16}, {"name": "digits", "resize": 32}, 4),
}
BATCH = 16  # the cases' batch size


def configs(case: str, steps: int, runs: int = 0, model: str | None = None, batch: int = BATCH) -> list[rb.RunConfig]:
    """The case's first ``runs`` configurations (0: all of the case's), with ``model`` (a name)
    and ``batch`` in place of the case's."""
    case_model, data, count = CASES[case]
    runs = runs or count
    size = steps * batch if data["name"] == "synthetic" else min(steps * batch, 1497)
    base = rb.RunConfig.from_dict(
        {
            "model": {"name": model} if model else case_model,
            "data": {**data, "train_size": size, "test_size": 16},
            "train": {"batch_size": batch, "epochs": 1},
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
        batch = config.train.batch_size
        order = torch.randperm(len(x), device=device)
        for s in range(len(x) // batch):
            index = order[s * batch : (s + 1) * batch]
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
    path: str = "eager",
) -> float:
    """All runs as one cohort: one epoch of the engine's training loop on ``path`` (``eager`` or
    ``native``), after one epoch of warm-up (which also captures the CUDA graph). Seconds."""
    trainer = CohortTrainer(
        [Member(c, RunStore(results, c.run_id())) for c in runs],
        data,
        EngineOptions(device=str(device), fused_update=fused, cuda_graph=graph, native=path == "native"),
    )
    if path == "native" and (why := trainer.native_unsupported()) is not None:
        raise SystemExit(f"the native step cannot train this case: {why}")
    trainer.path = path  # what CohortTrainer.run decides for new runs
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
    parser.add_argument("--model", help="an architecture in place of the case's (e.g. mlp-5-500)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"batch size (default {BATCH})")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="the engine's threads")
    parser.add_argument(
        "--update", choices=["auto", "fused", "unfused"], default="auto", help="the engine's SGD update"
    )
    parser.add_argument(
        "--graph", choices=["auto", "on", "off"], default="auto", help="the engine's CUDA graph (GPU only)"
    )
    parser.add_argument(
        "--paths", default="eager,native", help="engine paths to time (native: fully connected, CPU; else left out)"
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
    device = torch.device(args.device)
    fused = {"auto": None, "fused": True, "unfused": False}[args.update]
    graph = {"auto": None, "on": True, "off": False}[args.graph]
    runs = configs(args.case, args.steps, args.runs, args.model, args.batch)
    data = load_dataset(runs[0].data).to(device)
    paths = [p for p in args.paths.split(",") if p]
    if "native" in paths and (device.type != "cpu" or resolve(runs[0].model).family not in native.FAMILIES):
        paths.remove("native")
    threads = sorted({1, args.threads}) if device.type == "cpu" else [torch.get_num_threads()]
    times: dict[str, list[float]] = {f"plain loop, {t} thread{'s' * (t > 1)}": [] for t in threads}
    times |= {path: [] for path in paths}
    with tempfile.TemporaryDirectory() as results:
        for _ in range(args.repeats):
            for t in threads:
                torch.set_num_threads(t)
                times[f"plain loop, {t} thread{'s' * (t > 1)}"].append(reference_loop(runs, data, device))
            torch.set_num_threads(args.threads)
            for path in paths:
                times[path].append(cohort_engine(runs, data, device, results, fused, graph, path))
    run_steps = len(runs) * (len(data.x_train) // args.batch)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    steps = len(data.x_train) // args.batch
    print(f"{args.case}: {runs[0].model.name}, {len(runs)} runs x {steps} steps, batch {args.batch}")
    print(
        f"device {device} ({name}), torch {torch.__version__}, engine threads {args.threads}, "
        f"repeats {args.repeats}, update {'fused' if SETTING['fused_update'] else 'unfused'}, "
        f"cuda graph {'on' if SETTING['cuda_graph'] else 'off'}"
        + (f", native library {native.library_path()}" if "native" in paths else "")
    )
    labels = {"eager": f"cohort engine, eager ({len(runs)} runs as one model)"}
    labels["native"] = f"cohort engine, native step ({len(runs)} runs, one C++ call a step)"
    for key, t in times.items():
        label = labels.get(key, f"{key} (torch.nn + torch.optim.SGD, one run after another)")
        median, best = run_steps / statistics.median(t), run_steps / min(t)
        print(f"{label:<72} median {median:8.0f}  best {best:8.0f} run-steps/s")
    plain = min((k for k in times if k.startswith("plain")), key=lambda k: statistics.median(times[k]))
    for path in paths:
        median = statistics.median(times[plain]) / statistics.median(times[path])
        best = min(times[plain]) / min(times[path])
        print(f"ratio {path} / best plain loop ({plain}): median {median:.2f}x, best {best:.2f}x")


if __name__ == "__main__":
    main()
