"""``provenance.json``: how a run was made (versions, commit, device, threads, host, times).

Flat JSON, written when a training session of the run starts and rewritten when it ends. A run
resumed in a later session keeps its first ``start_time`` and counts its ``sessions``; the other
fields describe the latest session.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..options import EngineOptions
from .io import write_text
from .schema import SCHEMA_VERSION

FILE = "provenance.json"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout rankbias is imported from (editable install), else None."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(engine: EngineOptions) -> dict:
    """Where and how a run trained: versions, the device, threads and TensorFloat-32."""
    from .. import __version__

    device, tf32 = engine.torch_device, engine.tf32
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "rankbias_version": __version__,
        "git_commit": git_commit(),
        "schema_version": SCHEMA_VERSION,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "tf32": tf32 and device.type == "cuda",
        "hostname": socket.gethostname(),
    }


def start(run_dir: Path, engine: EngineOptions) -> None:
    old = read(run_dir) or {}
    record = environment(engine) | {
        "start_time": old.get("start_time", time.time()),
        "session_start_time": time.time(),
        "end_time": None,
        "sessions": int(old.get("sessions", 0)) + 1,
    }
    _write(run_dir, record)


def note(run_dir: Path, **fields) -> None:
    """Add ``fields`` to the run's record, if it has one (the engine: ``training_path``)."""
    record = read(run_dir)
    if record is not None:
        _write(run_dir, record | fields)


def finish(run_dir: Path, state: str | None) -> None:
    record = read(run_dir)
    if record is not None:
        _write(run_dir, record | {"end_time": time.time(), "end_state": state})


def read(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write(run_dir: Path, record: dict) -> None:
    write_text(Path(run_dir) / FILE, json.dumps(record, indent=2))
