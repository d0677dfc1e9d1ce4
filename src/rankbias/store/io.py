"""Writing results safely: every file whole or not at all, and a full or read-only disk as one
:class:`~rankbias.errors.StoreError` that names the folder and its free space.

A file is written under a temporary name in its folder and renamed over its target
(``os.replace``, atomic on POSIX file systems), so a killed writer or a full disk leaves the old
file or the new one, never a part. :func:`writing` turns the errors of a full, over-quota or
read-only disk (and of ``torch.save``, which reports a failed write as a ``RuntimeError``) into
one ``StoreError``; any other error passes through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from ..errors import ConfigError, StoreError

# a disk full or over quota, a folder not writable: no retry helps, the user must act
FATAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM)
LOW_SPACE = 1 << 20  # bytes: below this, a failed write is taken as a full disk
FIGURE_SUFFIXES = (".pdf", ".png", ".svg")  # the formats a figure is saved as (.pdf: vector)


def free_bytes(where: str | Path) -> int | None:
    """Free bytes on the file system of ``where`` (its nearest existing parent), or None."""
    path = Path(where).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_fatal(exc: BaseException, where: str | Path) -> bool:
    """Whether ``exc`` means the disk under ``where`` is full, over quota or not writable."""
    if isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS:
        return True
    free = free_bytes(where)
    return isinstance(exc, (OSError, RuntimeError)) and free is not None and free < LOW_SPACE


def store_error(exc: BaseException, where: str | Path) -> StoreError:
    """One message for a write that failed under ``where``: the folder, why, the free space."""
    free = free_bytes(where)
    space = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
    reason = getattr(exc, "strerror", None) or str(exc)
    return StoreError(
        f"cannot write under {where}: {reason} ({space}). Records already stored are intact; "
        "free space or fix the permissions, then run again to resume."
    )


@contextlib.contextmanager
def writing(where: str | Path):
    """Inside, a write that fails because the disk under ``where`` is full or not writable raises
    :func:`store_error`; other errors pass through."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as exc:
        if is_fatal(exc, where):
            raise store_error(exc, where) from exc
        raise


def check_output(path: str | Path, option: str, suffixes: tuple[str, ...] = (), folder: bool = False) -> Path:
    """Where a command will write ``path`` (a file ending in one of ``suffixes``, or a ``folder``),
    checked before any work: one :class:`ConfigError` naming ``option`` when the suffix is not one
    of them, the path is a file where a folder is needed (or the reverse), a parent is a file, or
    the nearest existing folder is not writable."""
    path = Path(path)
    if not folder and suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(option, f"{path}: give a file ending in {', '.join(suffixes)}")
    if path.exists() and path.is_dir() != folder:
        want, found = ("folder", "file") if folder else ("file", "folder")
        raise ConfigError(option, f"{path} is a {found}; give a {want}")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(option, f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(option, f"{path}: {parent} is not writable")
    return path


def write_text(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all: written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_from(write, path: Path) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it to ``path``; a
    failed write leaves ``path`` as it was and no temporary file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
