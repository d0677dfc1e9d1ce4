"""Reading many stored runs: ``rb.load``, ``rb.load(eps=...)`` (rerank) and a ``final`` query
over N synthetic runs (default 1,000: 11 records × 3 matrices each, written directly with
pyarrow in the store's layout; no training).

    python bench/store_scale.py [--runs 1000] [--dir /tmp/rb-store-scale] [--repeat 3]

Prints the best and median time of each, in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import rankbias as rb
from rankbias.store.schema import SCHEMA_KEY, SCHEMA_VERSION

LAYERS = [("hidden.0", 16, 64, True), ("hidden.1", 16, 16, True), ("out", 10, 16, False)]
EPOCHS = range(11)


def write(table: pa.Table, path: Path) -> None:
    pq.write_table(table.replace_schema_metadata({SCHEMA_KEY: str(SCHEMA_VERSION).encode()}), path)


def make_runs(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        config = rb.RunConfig.from_dict(
            {"model": "mlp-bn-2-16", "train": {"batch_size": [8, 16, 32, 64][i % 4], "seed": i, "epochs": 10},
             "optimizer": {"weight_decay": [0.0, 1e-3, 5e-3, 1e-2, 2e-2][(i // 4) % 5] * (1 + (i // 20) % 2)}}
        )  # fmt: skip
        run_id = config.run_id()
        run_dir = root / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
        (run_dir / "status.json").write_text(json.dumps({"state": "done", "epoch": 10, "message": None, "time": 0.0}))
        epochs = list(EPOCHS)
        scalars = {
            "run_id": [run_id] * len(epochs), "epoch": epochs, "step": [e * 10 for e in epochs],
            **{
                k: rng.random(len(epochs))
                for k in (
                    "train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "lr", "avg_rank", "distance"
                )
            },
        }  # fmt: skip
        write(pa.table(scalars), run_dir / "scalars.parquet")
        rows = [(e, name, r, c, counted) for e in epochs for name, r, c, counted in LAYERS]
        svs = [np.sort(rng.random(min(r, c)).astype(np.float32) ** 4)[::-1] for _, _, r, c, _ in rows]
        layers = {
            "run_id": [run_id] * len(rows), "epoch": [r[0] for r in rows], "layer": [r[1] for r in rows],
            "index": [[l[0] for l in LAYERS].index(r[1]) for r in rows],
            "rows": [r[2] for r in rows], "cols": [r[3] for r in rows],
            "m_l": [1] * len(rows), "counted": [r[4] for r in rows],
            "fro_norm": [float(np.sqrt((s.astype(np.float64) ** 2).sum())) for s in svs],
            "spectral_norm": [float(s[0]) for s in svs],
            "eps_rank": [int((s > 1e-3 * np.sqrt((s * s).sum())).sum()) for s in svs],
        }  # fmt: skip
        write(pa.table(layers), run_dir / "layers.parquet")
        spectra = {
            "run_id": layers["run_id"],
            "epoch": layers["epoch"],
            "layer": layers["layer"],
            "sv": pa.array(svs, type=pa.list_(pa.float32())),
        }
        write(pa.table(spectra), run_dir / "spectra.parquet")


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rb-store-scale"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = args.dir / str(args.runs)
    if not root.exists():
        make_runs(root, args.runs)
    loaded = rb.load(root)
    print(f"{len(loaded.runs)} runs, {len(loaded.scalars)} scalar rows, {len(loaded.spectra)} spectra")
    sql = 'select "train.batch_size", "optimizer.weight_decay", avg(avg_rank) from final group by 1, 2 order by 1, 2'
    for label, fn in [
        ("rb.load", lambda: rb.load(root)),
        ("rb.load(eps=1e-2)", lambda: rb.load(root, eps=1e-2)),
        ("rb.rerank only", lambda: rb.rerank(loaded, eps=1e-2)),
        ("rb.query final", lambda: rb.query(root, sql)),
    ]:
        best, median = timed(fn, args.repeat)
        print(f"{label:20s} best {best:7.3f} s   median {median:7.3f} s")


if __name__ == "__main__":
    main()
