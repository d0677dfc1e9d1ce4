"""Every error rankbias raises for a problem it can name: each says what is wrong and what to do.

All are :class:`RankbiasError`; the command line prints any of them as one line, ``error: ...``
(exit status 2), in one place (``cli.Commands``). Anything else that escapes is a bug.
"""


class RankbiasError(Exception):
    """Base class: a problem with the user's input, data, records or results directory."""


class ConfigError(RankbiasError, ValueError):
    """A configuration key or option has an unknown name, a wrong type or an impossible value."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(RankbiasError):
    """A data set is missing, unreadable or corrupt."""


class NotFoundError(RankbiasError, FileNotFoundError):
    """No run, results directory or checkpoint where one was asked for."""


class DamagedError(RankbiasError):
    """A run's stored file is unreadable, malformed or incomplete (the message names the file)."""


class DamagedRunWarning(UserWarning):
    """Damaged runs were left out of what was read (the message names each run and file)."""


class RecordsError(RankbiasError, ValueError):
    """The stored records cannot answer this (no step norms, no record at that epoch ...)."""


class SchemaError(RankbiasError):
    """Records written with another layout version than this rankbias reads."""


class StoreError(RankbiasError):
    """The results directory cannot be written (full disk, no permission, read-only)."""


class WorkerDied(RankbiasError):
    """A local worker process ended without reporting (SIGKILL, out of memory)."""


class QueryError(RankbiasError, ValueError):
    """A query DuckDB could not run (its message, plus the views there are)."""


class PlotError(RankbiasError, ValueError):
    """A figure cannot be drawn from these records with these arguments."""
