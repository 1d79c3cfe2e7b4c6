"""Load and validate training data for each ``data_format``.

Sources: a JSONL path (one JSON object a line), a list of dicts, or a
``datasets.Dataset``. Everything is read and checked before training starts, so a bad
line stops the run with one error naming the file and line; nothing is ever trained
on half-read data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from flux_core.errors import DataError


@dataclass(frozen=True)
class DataFormat:
    """The keys one data format requires; other keys are kept as extra columns."""

    name: str
    text_keys: tuple[str, ...]
    description: str


DATA_FORMATS = {
    "preferences": DataFormat(
        "preferences",
        ("prompt", "chosen", "rejected"),
        "preference pairs: prompt, chosen, rejected (strings or chat message lists)",
    ),
    "prompts": DataFormat(
        "prompts",
        ("prompt",),
        "prompts (string or chat message list); extra keys reach reward functions",
    ),
}


def get_data_format(name: str) -> DataFormat:
    try:
        return DATA_FORMATS[name]
    except KeyError:
        raise DataError(f"unknown data_format '{name}'; use one of: {', '.join(DATA_FORMATS)}") from None


def load_records(source: Any, data_format: str) -> list[dict[str, Any]]:
    """Read every example of ``source`` and validate it against ``data_format``."""
    fmt = get_data_format(data_format)
    if isinstance(source, (str, Path)):
        records = list(_read_jsonl(Path(source)))
        name = str(source)
    elif isinstance(source, list):
        records = [(index + 1, item) for index, item in enumerate(source)]
        name = "data list"
    elif hasattr(source, "column_names") and hasattr(source, "__iter__"):  # datasets.Dataset
        records = [(index + 1, dict(item)) for index, item in enumerate(source)]
        name = "dataset"
    else:
        raise DataError(
            f"data must be a JSONL file path, a list of dicts or a datasets.Dataset, not {type(source).__name__}"
        )
    if not records:
        raise DataError(f"{name}: no examples found (expected {fmt.description})")

    unit = "line" if name not in ("data list", "dataset") else "item"
    kinds = set()
    checked = []
    for number, record in records:
        where = f"{name}:{number}" if unit == "line" else f"{name} {unit} {number}"
        kinds.add(_check_record(record, fmt, where))
        checked.append(record)
    if len(kinds) > 1:
        raise DataError(f"{name}: mixes plain-text and chat-message examples; use one kind throughout")
    return checked


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a JSONL file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: invalid JSON: {error.msg} (column {error.colno})") from None


def _check_record(record: Any, fmt: DataFormat, where: str) -> str:
    """Validate one example; return 'text' or 'chat'."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with keys {', '.join(fmt.text_keys)}")
    kinds = set()
    for key in fmt.text_keys:
        if key not in record:
            raise DataError(f"{where}: missing key '{key}' (each example needs {', '.join(fmt.text_keys)})")
        kinds.add(_check_text(record[key], key, where))
    if len(kinds) > 1:
        raise DataError(f"{where}: {', '.join(fmt.text_keys)} must all be strings or all be chat message lists")
    return kinds.pop()


def _check_text(value: Any, key: str, where: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: '{key}' is empty")
        return "text"
    if isinstance(value, list) and value:
        for index, message in enumerate(value):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise DataError(
                    f'{where}: \'{key}\'[{index}] must be a message like {{"role": "user", "content": "..."}}'
                )
        return "chat"
    raise DataError(f"{where}: '{key}' must be a string or a list of chat messages, not {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an empty list"
    return type(value).__name__
