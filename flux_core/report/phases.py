"""One line on stderr per phase of a run's start, so the seconds before the first step say what they are spent on.

    flux: loading data: preferences.jsonl (256 rows)
    flux: loading model: Qwen/Qwen3-8B
    flux: tokenizing 256 rows

:func:`announce_phase` sends a line through the ``flux.phases`` logger (plugins call it for
phases of their own, such as tokenizing); ``FluxTrainer.fit`` shows those lines on stderr, in
the ``flux: ...`` style of Flux's other messages, for the duration of a run that shows its
progress (:func:`phase_lines`): not with ``FluxTrainer(show_progress=False)`` (``flux train
--no-progress``) nor with ``TQDM_DISABLE`` set, which also hides the progress bar. Outside a
run, the lines reach whatever logging the application configured, at INFO.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

logger = logging.getLogger("flux.phases")


def announce_phase(message: str) -> None:
    """Say what the run starts doing now (a few words, no ``flux:`` prefix), e.g. ``tokenizing 256 rows``."""
    logger.info(message)


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no progress output (tqdm reads it as a bool: set and not 0/false)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at creation), as ``print(..., file=sys.stderr)`` does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def phase_lines(enabled: bool = True) -> Iterator[None]:
    """Print :func:`announce_phase`'s lines to stderr as ``flux: ...`` inside this block when ``enabled``
    and ``TQDM_DISABLE`` is not set; restore the logger's settings afterwards."""
    if not enabled or progress_disabled():
        yield
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("flux: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown once, here, even where the application logs INFO to stderr too
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def describe_source(source: object) -> str:
    """A data source as a phase line names it: its path or hub id (each, for a list of sources), or what
    kind of object holds the rows."""
    if source is None:
        return "none given"
    sources = source if isinstance(source, list) else [source]
    paths = [_path_of(item) for item in sources]
    if sources and all(paths):
        return ", ".join(paths)
    return f"a {type(source).__name__}"  # rows in memory: a list, a Dataset


def _path_of(source: object) -> str | None:
    """The path of a str/PathLike, a ``DataSource`` (the config's long form) or a ``{path: ...}`` dict."""
    path = source.get("path") if isinstance(source, dict) else getattr(source, "path", source)
    return str(path) if isinstance(path, (str, os.PathLike)) else None
