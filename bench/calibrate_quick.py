"""Search for quick-scale settings under which a small convolutional or attention network shows
the papers' effect (rank lower at smaller B, larger μ, larger λ) on the bundled digits.

Trains a grid B × μ × λ at a constant learning rate for ``--epochs`` epochs, records every epoch,
and prints each run's average rank (counted matrices) at a few epochs and thresholds. The stores
stay under ``--results``: any other ε or epoch is read from them afterwards (``rb.load``).

    python bench/calibrate_quick.py --family resnet18 --device cuda --results /tmp/cal
"""

from __future__ import annotations

import argparse
import itertools
import time

import rankbias as rb

FAMILIES = {
    "resnet18": ({"name": "resnet18", "width": 8}, {}),
    "vgg16": ({"name": "vgg16", "width": 4}, {"resize": 32}),
    "vit": ({"name": "vit", "width": 32, "mlp_dim": 64}, {}),
}


def grid(family: str, batches, lrs, wds, epochs: int, momentum: float) -> list[dict]:
    model, data = FAMILIES[family]
    return [
        {"model": model, "data": {"name": "digits", "train_size": 512, "test_size": 256, **data},
         "optimizer": {"lr": lr, "momentum": momentum, "weight_decay": wd}, "schedule": {"kind": "constant"},
         "train": {"batch_size": b, "epochs": epochs}, "record": {"eps": 1e-2, "every": 1}}
        for b, lr, wd in itertools.product(batches, lrs, wds)
    ]  # fmt: skip


def table(path, epochs: list[int], eps_values: list[float]):
    rows = []
    for eps in eps_values:
        res = rb.load(path, eps=eps)
        runs = res.runs.set_index("run_id")
        s = res.scalars
        for run_id, g in s.groupby("run_id"):
            r = runs.loc[run_id]
            row = {"eps": eps, "B": r["train.batch_size"], "lr": r["optimizer.lr"], "wd": r["optimizer.weight_decay"]}
            for e in epochs:
                at = g[g["epoch"] == e]
                row[f"r{e}"] = round(float(at["avg_rank"].iloc[0]), 2) if len(at) else None
            row["acc"] = round(float(g["test_acc"].iloc[-1]), 3) if "test_acc" in g else None
            rows.append(row)
    import pandas as pd

    return pd.DataFrame(rows).sort_values(["eps", "lr", "wd", "B"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=FAMILIES, required=True)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.2])
    ap.add_argument("--wds", type=float, nargs="+", default=[0.0, 5e-3, 5e-2])
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    configs = grid(args.family, args.batches, args.lrs, args.wds, args.epochs, args.momentum)
    start = time.perf_counter()
    rb.train([rb.RunConfig.from_dict(c) for c in configs], f"{args.results}/{args.family}", device=args.device)
    print(f"{args.family}: {len(configs)} runs x {args.epochs} epochs in {time.perf_counter() - start:.0f} s")
    marks = sorted({e for e in (4, 9, 19, 39, args.epochs - 1) if e < args.epochs})
    with __import__("pandas").option_context("display.width", 200, "display.max_rows", 500):
        print(table(f"{args.results}/{args.family}", marks, [1e-2, 1e-3]).to_string(index=False))


if __name__ == "__main__":
    main()
