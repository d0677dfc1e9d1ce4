"""One writer per run: a lock file in the run directory, ``run.lock``.

The file is created with ``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+) and
holds its owner's ``{"pid", "host", "time"}``. A lock whose owner is a process of this host
that no longer exists is stale: it is taken over. Taking over happens under an ``flock`` on
``<results>/.lock-guard`` so that two sweeps finding the same stale lock cannot both take it.
A lock held by another host is never taken over automatically (its pid means nothing here):
remove the file by hand if that host is gone (``rankbias status`` shows the owner).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child not yet reaped by its parent still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_owner(run_dir: Path) -> dict | None:
    """The owner of a run's lock (``{"pid", "host", "time", "stale"}``), or None if unlocked."""
    try:
        owner = json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    owner["stale"] = owner.get("host") == HOST and not pid_alive(int(owner.get("pid", -1)))
    return owner


class RunLock:
    """``acquire()`` returns False when a live process holds the run; ``release()`` removes the file."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        with _Guard(self.path.parent.parent / ".lock-guard"):
            owner = lock_owner(self.path.parent)
            if owner is not None and not owner["stale"]:
                return False
            self.path.unlink(missing_ok=True)  # stale (or vanished meanwhile)
            return self._create()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": HOST, "time": time.time()}))
        self.held = True
        return True


class _Guard:
    """An exclusive ``flock`` on a file, released when the process dies."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
