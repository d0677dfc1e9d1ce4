"""Errors rankbias raises for bad input: each names the problem and what to do."""


class RankbiasError(Exception):
    """Base class: a problem with the user's input, reported before any training."""


class ConfigError(RankbiasError, ValueError):
    """A configuration key has an unknown name, a wrong type or an impossible value."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(RankbiasError):
    """A data set is missing, unreadable or corrupt."""
