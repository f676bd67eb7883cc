"""One-line errors for bad input: each names what is wrong and how to fix it."""

from __future__ import annotations


class SdbertError(Exception):
    """Base class: ``str(err)`` is a single line meant for the user, not a traceback."""


class ConfigError(SdbertError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class DataError(SdbertError, ValueError):
    """A dataset row, column or split is unusable (names dataset, split, column and row)."""


class SourceError(SdbertError, RuntimeError):
    """A model or data source could not be fetched, verified or reached."""


class TrainingDiverged(SdbertError, RuntimeError):
    """The loss or the logits left the configured bounds during training."""
