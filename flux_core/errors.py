"""Errors that reach users as one line on stderr (no traceback unless ``--debug``)."""


class FluxError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class ConfigError(FluxError):
    """A configuration file or value is invalid."""


class DataError(FluxError):
    """A training data file or object is invalid."""
