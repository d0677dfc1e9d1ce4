"""Fetching missing data set files, and the single error raised when they cannot be had.

A file is fetched with :mod:`urllib` (``TIMEOUT`` seconds per connection) into ``<name>.part`` in
the data set's directory and renamed once complete, so an interrupted download never leaves a
file that looks finished. ``.tar.gz`` archives are unpacked into that directory (tarfile's
``"data"`` filter: no absolute paths, no links out of the directory) and then deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

from ..errors import DataError

TIMEOUT = 60.0
OFF = "downloading is off (download=False or RANKBIAS_OFFLINE=1)"


def obtain(dataset: str, directory: Path, missing: list[str], urls: list[str], download: bool, note: str = "") -> None:
    """Download ``urls`` into ``directory`` when ``missing`` is not empty, or raise one DataError.

    ``missing`` names the files the loader looked for (relative to ``directory``); ``urls`` are
    the files or archives that provide them; ``note`` adds a line to the error (how to unpack...).
    The caller checks afterwards that the files are really there.
    """
    if not missing:
        return
    if not download:
        raise missing_files(dataset, directory, missing, urls, OFF, note)
    for url in urls:
        try:
            path = fetch(url, directory)
            if path.name.endswith((".tar.gz", ".tgz")):
                unpack(path, directory)
                path.unlink()
        except Exception as exc:  # URLError, HTTPError, timeouts, disk errors, bad archives  # noqa: BLE001
            reason = f"downloading {url} failed: {type(exc).__name__}: {exc}"
            raise missing_files(dataset, directory, missing, urls, reason, note) from None


def missing_files(
    dataset: str, directory: Path, missing: list[str], urls: list[str], reason: str, note: str = ""
) -> DataError:
    """The error for absent files: which data set, which files, where they go, where to get them."""
    lines = [
        f"data set {dataset!r}: files missing from {directory}: {', '.join(missing)}",
        f"Not downloaded: {reason}.",
        f"Put the files in {directory}{os.sep} -- get them from:",
        *(f"  {url}" for url in urls),
    ]
    if note:
        lines.append(note)
    return DataError("\n".join(lines))


def fetch(url: str, directory: Path) -> Path:
    """Download ``url`` to ``directory/<last part of the url>`` via a ``.part`` file; the path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / url.rstrip("/").rsplit("/", 1)[-1]
    part = target.with_name(target.name + ".part")
    print(f"rankbias: downloading {url} -> {target}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def unpack(archive: Path, directory: Path) -> None:
    """Extract a tar archive into ``directory``, refusing members that would land outside it."""
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
            return
        for member in tar.getmembers():  # Pythons without extraction filters
            if member.issym() or member.islnk() or Path(member.name).is_absolute() or ".." in Path(member.name).parts:
                raise tarfile.TarError(f"unsafe member {member.name!r} in {archive}")
        tar.extractall(directory)
