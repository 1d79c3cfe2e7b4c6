"""Stage 1 of loading data: read it from wherever users keep it into an Arrow-backed ``datasets.Dataset``.

Sources (see :func:`read_source`): a JSONL/JSON/Parquet/CSV file or a glob of shards, a
directory written by ``save_to_disk`` (or a folder of data files), a hub dataset id with
optional subset ``name`` and ``split``, a ``datasets.Dataset``/``DatasetDict``, or a list
of dicts. Files go through ``datasets.load_dataset``, so rows stay memory-mapped on disk
and a second load of the same file comes from the ``datasets`` cache.

Hands the next stage (:mod:`flux_core.data.shapes`, through :mod:`flux_core.data.load`)
the dataset and a :class:`RowNamer` that names a row in errors the way its user knows
it: ``file.jsonl:LINE`` for JSON lines, ``file.parquet row N`` for other files, ``data
list item N`` for lists. A file ``datasets`` cannot read is scanned line by line here,
to name the first unreadable line.
"""

from __future__ import annotations

import contextlib
import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from flux_core.data.formats import describe_kind, value_kind
from flux_core.errors import DataError

# File suffix -> the ``datasets`` builder that reads it.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_GLOB_CHARS = set("*?[")
PROGRESS_BYTES = 64 * 2**20  # smaller files load in about a second: no progress bars for them
PROGRESS_ROWS = 100_000  # likewise for maps over fewer rows


@dataclass
class RowNamer:
    """Names row ``index`` (0-based) of a source the way its user thinks of it."""

    name: str
    unit: str = "row"
    jsonl_path: Path | None = None  # JSON lines: name rows by their line in the file
    _line_numbers: list[int] = field(default_factory=list, repr=False)

    def __call__(self, index: int) -> str:
        if self.jsonl_path is not None:
            return f"{self.name}:{self._line_of(index)}"
        return f"{self.name} {self.unit} {index + 1}"

    def _line_of(self, index: int) -> int:
        """1-based line of the ``index``-th non-blank line (blank lines hold no row)."""
        if not self._line_numbers:  # only on the error path: one scan of the file
            with self.jsonl_path.open("rb") as handle:
                self._line_numbers = [number for number, line in enumerate(handle, 1) if line.strip()]
        return self._line_numbers[index] if index < len(self._line_numbers) else index + 1


def read_source(
    source: Any, *, name: str | None = None, split: str | None = None, text_columns: Collection[str] = ()
) -> tuple[Any, RowNamer]:
    """The Arrow-backed dataset behind ``source`` and a namer for its rows.

    ``name`` (a hub subset) and ``split`` apply to path-like sources; ``split``
    also picks a split of a ``DatasetDict`` (default ``train``). ``text_columns``
    name the columns that must hold text, for errors about unreadable JSON lines.
    """
    from datasets import Dataset, DatasetDict

    if isinstance(source, Dataset):
        return source, RowNamer("dataset")
    if isinstance(source, DatasetDict):
        return pick_split(source, split, "DatasetDict"), RowNamer(f"dataset split '{split or 'train'}'")
    if isinstance(source, list):
        return _from_list(source), RowNamer("data list", unit="item")
    if isinstance(source, (str, Path)):
        return _read_path(str(source), name, split, text_columns)
    raise DataError(
        "data must be a file path, a glob, a saved dataset directory, a hub dataset id, a datasets.Dataset "
        f"or DatasetDict, or a list of dicts, not {type(source).__name__}"
    )


def pick_split(dataset_dict: Any, split: str | None, where: str) -> Any:
    """``split`` of a ``DatasetDict``: ``train`` by default, or its only split."""
    splits = list(dataset_dict)
    if split is None:
        if "train" in splits or len(splits) != 1:
            split = "train"
        else:
            split = splits[0]
    if split not in dataset_dict:
        raise DataError(f"{where}: no split '{split}' (splits: {', '.join(splits)}); set data.split")
    return dataset_dict[split]


def _from_list(items: list) -> Any:
    from datasets import Dataset

    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"data list item {index + 1}: expected a dict of columns, not {type(item).__name__}")
    try:
        return Dataset.from_list(items)
    except Exception:  # a column whose values differ in kind: Arrow cannot type it
        from datasets import Features, Json

        # Keep such columns as JSON values; the checks then name the item that differs, as for JSONL.
        keys = dict.fromkeys(key for item in items for key in item)
        return Dataset.from_list(items, features=Features({key: Json() for key in keys}))


def _read_path(path: str, name: str | None, split: str | None, text_columns: Collection[str]) -> tuple[Any, RowNamer]:
    local = Path(path)
    if local.is_dir():
        return _read_directory(local, name, split)
    if local.is_file():
        return _read_files(path, [local], split, text_columns)
    if _GLOB_CHARS & set(path):
        files = sorted(Path(match) for match in glob.glob(path, recursive=True) if Path(match).is_file())
        if not files:
            raise DataError(f"{path}: no files match this pattern")
        return _read_files(path, files, split, text_columns)
    if local.suffix.lower() in FILE_BUILDERS or path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        raise DataError(f"{path}: file not found")
    return _read_hub(path, name, split)


def _builder_for(path: str, files: list[Path]) -> str:
    suffixes = {file.suffix.lower() for file in files}
    builders = {FILE_BUILDERS.get(suffix) for suffix in suffixes}
    if None in builders or len(builders) != 1:
        known = ", ".join(sorted(FILE_BUILDERS))
        raise DataError(f"{path}: cannot read {', '.join(sorted(suffixes))} files as one dataset; use one of {known}")
    return builders.pop()


def _read_files(path: str, files: list[Path], split: str | None, text_columns: Collection[str]) -> tuple[Any, RowNamer]:
    builder = _builder_for(path, files)
    one_jsonl = len(files) == 1 and files[0].suffix.lower() == ".jsonl"
    namer = RowNamer(str(path), jsonl_path=files[0] if one_jsonl else None)
    try:
        with quiet_datasets(show_progress=sum(file.stat().st_size for file in files) >= PROGRESS_BYTES):
            dataset = _load_dataset(builder, data_files=[str(file) for file in files], split="train")
    except Exception as error:
        if all(_is_blank(file) for file in files):
            from datasets import Dataset

            return Dataset.from_dict({}), namer  # reported as "no examples found"
        if builder == "json":
            for file in files:
                scan_json_lines(file, text_columns)  # names the first bad line, if there is one
        raise DataError(f"{path}: cannot read as {builder}: {_cause(error)}") from None
    if split not in (None, "train"):
        raise DataError(f"{path}: a data file has one split ('train'), not '{split}'; use eval_fraction to carve one")
    return dataset, namer


def _read_directory(directory: Path, name: str | None, split: str | None) -> tuple[Any, RowNamer]:
    from datasets import DatasetDict, load_from_disk

    namer = RowNamer(str(directory))
    if (directory / "dataset_info.json").exists() or (directory / "dataset_dict.json").exists():
        try:
            loaded = load_from_disk(str(directory))
        except Exception as error:
            raise DataError(f"{directory}: cannot load the saved dataset: {_cause(error)}") from None
        if isinstance(loaded, DatasetDict):
            return pick_split(loaded, split, str(directory)), namer
        return loaded, namer
    # A folder of data files (e.g. a downloaded copy of a hub dataset repository).
    try:
        with quiet_datasets():
            loaded = _load_dataset(str(directory), name=name)
    except Exception as error:
        raise DataError(f"{directory}: not a saved dataset nor a folder of data files: {_cause(error)}") from None
    return pick_split(loaded, split, str(directory)), namer


def _read_hub(dataset_id: str, name: str | None, split: str | None) -> tuple[Any, RowNamer]:
    try:
        with quiet_datasets():
            loaded = _load_dataset(dataset_id, name=name, split=split)
    except Exception:
        raise DataError(
            f"cannot load dataset '{dataset_id}' from the hub (offline?): download it or pass a local path"
        ) from None
    subset = f" ({name})" if name else ""
    namer = RowNamer(f"dataset '{dataset_id}'{subset}")
    if split is None:
        return pick_split(loaded, None, f"dataset '{dataset_id}'"), namer
    return loaded, namer


def _load_dataset(path: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset``: the one call every file, folder and hub source goes through."""
    import datasets

    return datasets.load_dataset(path, **{key: value for key, value in kwargs.items() if value is not None})


def scan_json_lines(path: Path, text_columns: Collection[str] = ()) -> None:
    """Read ``path`` line by line (never all at once) and raise on the first unreadable line.

    The error path of JSON loading: ``datasets`` reports a broken file without naming
    the line. A line is unreadable when it is not UTF-8, not a JSON object, or gives a
    key a value of another type than earlier lines did (``text_columns`` must hold
    strings or chat message lists). Returns quietly when no line is.
    """
    if path.suffix.lower() != ".jsonl":
        return
    first_seen: dict[str, tuple[str, int]] = {}  # key -> (kind of value, line it was first seen on)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{where}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: invalid JSON: {error.msg} (column {error.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, not {type(record).__name__}")
            for key, value in record.items():
                if value is None:
                    continue
                if key in text_columns:
                    kind = value_kind(value, key, allow_empty=True, where=lambda where=where: where)
                else:
                    kind = (
                        "number"
                        if isinstance(value, (int, float)) and not isinstance(value, bool)
                        else type(value).__name__
                    )
                first_kind, first_line = first_seen.setdefault(key, (kind, number))
                if kind != first_kind:
                    raise DataError(
                        f"{where}: '{key}' is {describe_kind(kind)} here but {describe_kind(first_kind)} "
                        f"on line {first_line}; use one kind of value per key"
                    )


def _is_blank(path: Path) -> bool:
    """Whether ``path`` holds nothing but whitespace (read a block at a time)."""
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            if block.strip():
                return False
    return True


def _cause(error: BaseException) -> str:
    """The innermost message of a chained error, on one line."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def quiet_datasets(show_progress: bool = True):
    """``datasets`` logs a multi-line error before raising (Flux reports it in one line), and
    shows progress bars; ``show_progress=False`` hides them for loads too quick to need one."""
    import datasets
    from datasets.utils import logging as datasets_logging

    verbosity = datasets_logging.get_verbosity()
    bars_were_enabled = datasets.is_progress_bar_enabled()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(verbosity)
        if bars_were_enabled:
            datasets.enable_progress_bars()
