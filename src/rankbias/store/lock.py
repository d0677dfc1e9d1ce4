"""One writer per run: a lock file in the run directory, ``run.lock``.

The owner's ``{"pid", "host", "time"}`` is written to a private temporary file which is then
hard-linked to ``run.lock`` (``link`` fails if the name exists: atomic on local file systems and
NFS), so a lock is never seen half written. A lock whose owner is a process of this host that
no longer exists (or whose pid now belongs to a process started after the lock) is stale: it
is taken over. Taking over happens under an ``flock`` on
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


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as dead), and, with
    ``since`` (Unix time), was started no later than that (else the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child not yet reaped by its parent still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        if since is not None:  # field 22 of stat: start time in clock ticks after boot
            started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return started <= since + 1.0
        return True
    except (OSError, IndexError, ValueError):
        return True


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime"):
                return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def lock_owner(run_dir: Path) -> dict | None:
    """The owner of a run's lock (``{"pid", "host", "time", "stale"}``), or None if unlocked."""
    try:
        owner = json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    owner["stale"] = owner.get("host") == HOST and not pid_alive(int(owner.get("pid", -1)), owner.get("time"))
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

    def clear_stale(self) -> bool:
        """Remove the lock if its owner is dead (e.g. killed after its run finished, before it
        released the lock); a live owner's lock stays. Returns whether a lock was removed."""
        if not self.path.exists():
            return False
        with _Guard(self.path.parent.parent / ".lock-guard"):
            owner = lock_owner(self.path.parent)
            if owner is None or not owner["stale"]:
                return False
            self.path.unlink(missing_ok=True)
            return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:  # noqa: PYI034 (final in practice)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{HOST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": HOST, "time": time.time()}))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
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
