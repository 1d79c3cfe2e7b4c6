"""Telling a local path from a hub id by its look, so a mistyped path fails at once.

``data:``, ``model_path`` and ``flux generate`` take a local path or a hub id (``org/name``).
Whatever does not exist locally used to go to the hub, where a typo costs half a minute of
retries before its error. A value that LOOKS like a path is never a hub id, so it can fail
at once: it starts with ``.`` (``./``, ``../``, a hidden folder), ``/`` or ``~`` (a hub id
starts with a letter or digit), has more than one ``/`` (a hub id has one at most), or ends
in a file extension Flux reads (a hub id never does; ``Qwen/Qwen2.5-0.5B`` ends in ``.5B``,
which is not one).
"""

from __future__ import annotations

# Suffixes of the files Flux reads as data or loads as weights (a hub id ends in none of them).
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
FILE_SUFFIXES = DATA_SUFFIXES + COMPRESSION_SUFFIXES + WEIGHT_SUFFIXES + (".yaml", ".yml")


def looks_like_path(value: str) -> bool:
    """Whether ``value`` can only be a filesystem path, never a hub id (see the module docstring)."""
    text = str(value)
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or text.lower().endswith(FILE_SUFFIXES)
