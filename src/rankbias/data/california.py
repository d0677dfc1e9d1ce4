"""California housing (regression): a CSV file, or scikit-learn's cached copy.

``<root>/california/california_housing.csv``: a header row with the columns in ``COLUMNS`` (the
8 features, then the target ``MedHouseVal``, median house value in units of $100,000), then one
row of numbers per block group (20640 in the full data set). This is exactly what
``sklearn.datasets.fetch_california_housing(as_frame=True).frame.to_csv(path, index=False)``
writes. Without the CSV, :func:`sklearn.datasets.fetch_california_housing` is asked, with
``data_home=<root>/california``, downloading only when allowed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import OFF, missing_files

FILENAME = "california_housing.csv"
COLUMNS = (
    "MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude", "MedHouseVal"
)
SOURCE = "https://ndownloader.figshare.com/files/5976036"  # scikit-learn's source archive (cal_housing.tgz)
NOTE = (
    f"Write {FILENAME} on a machine with internet with\n"
    "  sklearn.datasets.fetch_california_housing(as_frame=True).frame.to_csv(path, index=False)\n"
    "or let scikit-learn download into that directory (online, or RANKBIAS_OFFLINE unset)."
)


def load(directory: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """The whole pool: float32 features (N, 8) and float32 targets (N,)."""
    path = directory / FILENAME
    if path.is_file():
        return read_csv(path)
    try:
        from sklearn.datasets import fetch_california_housing

        bunch = fetch_california_housing(data_home=str(directory), download_if_missing=download)
    except Exception as exc:  # not cached and offline, URLError, timeouts, a damaged cache...  # noqa: BLE001
        if download:
            reason = f"scikit-learn could not fetch it: {type(exc).__name__}: {exc}"
        else:
            reason = f"no scikit-learn copy there either, and {OFF}"
        raise missing_files("california", directory, [FILENAME], [SOURCE], reason, NOTE) from None
    return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.float32)


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets from a CSV file with the header ``COLUMNS``."""
    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            if tuple(header) != COLUMNS:
                raise DataError(f"{path}: columns are {','.join(header) or '(none)'}; expected {','.join(COLUMNS)}")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(COLUMNS):
                    raise DataError(f"{path}, line {reader.line_num}: {len(row)} values, expected {len(COLUMNS)}")
                try:
                    rows.append([float(value) for value in row])
                except ValueError:
                    raise DataError(f"{path}, line {reader.line_num}: not all values are numbers: {row}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    table = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(table).all():
        raise DataError(f"{path}: holds NaN or infinite values")
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.float32)
