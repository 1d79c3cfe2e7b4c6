"""Errors that reach users as one line on stderr (no traceback unless ``--debug``), and the
"did you mean" hint those lines end with."""

import difflib


class FluxError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class ConfigError(FluxError):
    """A configuration file or value is invalid."""


class DataError(FluxError):
    """A training data file or object is invalid."""


def close_match(name: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
