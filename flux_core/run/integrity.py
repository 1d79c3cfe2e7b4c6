"""Checkpoint integrity: find the damaged file of a ``checkpoint-N`` before resuming from it.

A checkpoint is renamed into place only once complete (:mod:`flux_core.run.checkpoint`),
but a disk that filled up, a copy that stopped half-way or a file edited by hand can
still leave one that fails deep inside ``torch.load`` or ``json.loads`` with an error
that names no file. :func:`checkpoint_damage` reads just enough of each file to say
which one is broken and how, cheaply (headers and zip directories, not the tensors):

* the resume files listed in ``flux_state.json`` must exist;
* JSON files parse, and every line of a ``.jsonl`` file is a JSON object (the
  checkpoint's metrics history needs a ``step`` in each);
* safetensors files are as long as their header says (:func:`flux_core.modeling.safetensors_problem`);
* files that ``torch.save`` wrote (zip archives: ``optimizer.pt``, ``rng_state.pth``,
  accelerate's ``*.bin`` and ``*.pkl``) have a readable zip directory whose entries fit in the file.

:func:`flux_core.run.resume.find_resume_point` uses it: ``--resume`` falls back to the
previous complete checkpoint with a warning, an explicitly named damaged checkpoint is a
one-line error naming the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from flux_core.run.layout import HISTORY_FILE, STATE_FILE

ZIP_MAGIC = b"PK\x03\x04"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".pkl")


def checkpoint_damage(checkpoint: Path) -> tuple[str, str] | None:
    """``(where, what)`` for the first damaged file of ``checkpoint`` (``where`` is the
    file, or ``file:line``), or ``None`` when every file reads."""
    state_file = checkpoint / STATE_FILE
    damage = _file_damage(state_file)
    if damage is not None:
        return damage
    state = json.loads(state_file.read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return str(state_file), "holds no step (not written by Flux, or edited)"
    for name in state.get("resume_files") or []:
        if not (checkpoint / name).exists():
            return str(checkpoint / name), "missing"
    for file in sorted(path for path in checkpoint.rglob("*") if path.is_file()):
        damage = _file_damage(file, needs_step=file == checkpoint / HISTORY_FILE)
        if damage is not None:
            return damage
    return None


def _file_damage(file: Path, needs_step: bool = False) -> tuple[str, str] | None:
    from flux_core.modeling import safetensors_problem

    if file.suffix == ".json":
        return _json_damage(file)
    if file.suffix == ".jsonl":
        return _jsonl_damage(file, needs_step)
    if file.suffix == ".safetensors":
        problem = safetensors_problem(file)
        return None if problem is None else (str(file), problem)
    if file.suffix in TORCH_SUFFIXES:
        problem = _torch_file_problem(file)
        return None if problem is None else (str(file), problem)
    return None


def _json_damage(file: Path) -> tuple[str, str] | None:
    try:
        json.loads(file.read_bytes())
    except UnicodeDecodeError:
        return str(file), "corrupt (not UTF-8 text)"
    except ValueError as error:
        where = f"{file}:{error.lineno}" if isinstance(error, json.JSONDecodeError) else str(file)
        return where, f"truncated or corrupt (not valid JSON: {getattr(error, 'msg', error)})"
    return None


def _jsonl_damage(file: Path, needs_step: bool) -> tuple[str, str] | None:
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                return f"{file}:{number}", "truncated or corrupt (not a JSON object)"
            if not isinstance(row, dict):
                return f"{file}:{number}", "truncated or corrupt (not a JSON object)"
            if needs_step and not isinstance(row.get("step"), int):
                return f"{file}:{number}", "a metrics row without an integer 'step'"
    return None


def _torch_file_problem(file: Path) -> str | None:
    """Why ``torch.load`` would fail on ``file``, judged from its zip directory; ``None``
    when it looks whole (or is not a zip archive, which is not checked)."""
    size = file.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    with file.open("rb") as stream:
        if stream.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return None  # not torch.save's zip format (a legacy pickle): torch.load will tell
    try:
        with zipfile.ZipFile(file) as archive:
            end = max((entry.header_offset + entry.compress_size for entry in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, ValueError):
        return f"truncated or corrupt ({size} bytes, no complete zip directory)"
    if end > size:
        return f"truncated or corrupt ({size} bytes, its zip directory describes {end})"
    return None
