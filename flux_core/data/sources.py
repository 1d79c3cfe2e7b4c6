"""Stage 1 of loading data: read it from wherever users keep it into an Arrow-backed ``datasets.Dataset``.

Sources (see :func:`read_source`): a JSONL/JSON/Parquet/CSV file (JSON and CSV also
compressed: ``.gz``, ``.bz2``, ``.xz``, ``.zst``) or a glob of shards, a directory written
by ``save_to_disk`` (or a folder of data files), a hub dataset id with optional subset
``name`` and ``split``, a ``datasets.Dataset``/``DatasetDict``, or a list of dicts. Files
go through ``datasets.load_dataset`` (which decompresses them through fsspec), so rows stay
memory-mapped on disk and a second load of the same file comes from the ``datasets`` cache.

Local files are read content-true: ``datasets`` keys its cache by path and mtime, so a file
rewritten under the same mtime (``cp -p``, ``rsync -t``) would be served stale. Flux adds a
digest of the files' bytes (xxhash, streamed) to the cache key and makes it the dataset's
fingerprint: a changed file is read again, the loaded dataset's fingerprint changes with
its bytes and nothing else (not with the path or the mtime), and every later ``map`` is
cached under a fingerprint derived from it (the training data's fingerprint that a
checkpoint records, :func:`flux_core.data.load.training_data_identity`).

A ``.json`` file holding one object is one row, as ``datasets`` reads it, except an object
of columns (every value a list, none of them chat messages: ``{"prompt": [...], "chosen":
[...]}``), which becomes one row per list item.

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
from flux_core.paths import COMPRESSION_SUFFIXES, looks_like_path

# File suffix -> the ``datasets`` builder that reads it.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# Builders whose files may be compressed (fsspec infers the codec from the suffix). Parquet
# compresses inside the file already, and ``datasets`` cannot read a compressed one.
COMPRESSIBLE = {"json", "csv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_GLOB_CHARS = set("*?[")
PROGRESS_BYTES = 64 * 2**20  # smaller files load in about a second: no progress bars for them
PROGRESS_ROWS = 100_000  # likewise for maps over fewer rows
SHARD_SAMPLE_LINES = 100  # lines of each JSON-lines shard compared with the others before a glob loads


@dataclass
class RowNamer:
    """Names row ``index`` (0-based) of a source the way its user thinks of it."""

    name: str
    unit: str = "row"
    jsonl_path: Path | None = None  # JSON lines: name rows by their line in the file
    shards: list[Path] = field(default_factory=list)  # several files read as one (a glob): name the row's own file
    _line_numbers: list[int] = field(default_factory=list, repr=False)
    _shard_namers: list[tuple[int, RowNamer]] | None = field(default=None, repr=False)

    def __call__(self, index: int) -> str:
        if self.jsonl_path is not None:
            return f"{self.name}:{self._line_of(index)}"
        for start, namer in reversed(self._shard_starts()):
            if index >= start:
                return namer(index - start)
        return f"{self.name} {self.unit} {index + 1}"

    def _shard_starts(self) -> list[tuple[int, RowNamer]]:
        """(first row, namer) of each shard, when every shard's row count is known without loading it
        (JSON lines: its non-blank lines; Parquet: its footer); else none, and rows are named in the whole."""
        if self._shard_namers is None:
            self._shard_namers, start = [], 0
            for shard in self.shards:
                namer = RowNamer(str(shard), jsonl_path=shard if data_suffix(shard)[0] == ".jsonl" else None)
                self._shard_namers.append((start, namer))
                rows = _rows_in(shard)
                if rows is None:
                    self._shard_namers = []
                    break
                start += rows
        return self._shard_namers

    def _line_of(self, index: int) -> int:
        """1-based line of the ``index``-th non-blank line (blank lines hold no row)."""
        if not self._line_numbers:  # only on the error path: one scan of the file
            with open_data_file(self.jsonl_path) as handle:
                self._line_numbers = [number for number, line in enumerate(handle, 1) if line.strip()]
        return self._line_numbers[index] if index < len(self._line_numbers) else index + 1


def _rows_in(shard: Path) -> int | None:
    """How many rows ``datasets`` reads from ``shard`` (JSON lines, Parquet), or ``None`` when unknown."""
    suffix = data_suffix(shard)[0]
    if suffix == ".jsonl":
        with open_data_file(shard) as handle:
            return sum(1 for line in handle if line.strip())
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(shard).num_rows
    return None


def read_source(
    source: Any,
    *,
    name: str | None = None,
    split: str | None = None,
    text_columns: Collection[str] = (),
    what: str = "data",
) -> tuple[Any, RowNamer]:
    """The Arrow-backed dataset behind ``source`` and a namer for its rows.

    ``name`` (a hub subset) and ``split`` apply to path-like sources; ``split``
    also picks a split of a ``DatasetDict`` (default ``train``). ``text_columns``
    name the columns that must hold text, for errors about unreadable JSON lines.
    ``what`` is the config key the source came from (``data``, ``eval_data``,
    ``data[1]``), for errors about the path itself.
    """
    from datasets import Dataset, DatasetDict

    if isinstance(source, Dataset):
        return source, RowNamer("dataset")
    if isinstance(source, DatasetDict):
        return pick_split(source, split, "DatasetDict"), RowNamer(f"dataset split '{split or 'train'}'")
    if isinstance(source, list):
        return _from_list(source), RowNamer("data list", unit="item")
    if isinstance(source, (str, Path)):
        return _read_path(str(source), name, split, text_columns, what)
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


def _read_path(
    path: str, name: str | None, split: str | None, text_columns: Collection[str], what: str
) -> tuple[Any, RowNamer]:
    local = Path(path).expanduser()
    if local.is_dir():
        return _read_directory(local, name, split)
    if local.is_file():
        return _read_files(path, [local], split, text_columns)
    if _GLOB_CHARS & set(path):
        files = sorted(Path(match) for match in glob.glob(str(local), recursive=True) if Path(match).is_file())
        if not files:
            raise DataError(f"{what}: {path}: no files match this pattern")
        return _read_files(path, files, split, text_columns)
    if looks_like_path(path) or not _HUB_ID.match(path):  # never a hub id: no half minute of hub retries
        raise DataError(f"{what}: {path}: file not found")
    return _read_hub(path, name, split)


def data_suffix(path: Path) -> tuple[str, str | None]:
    """The suffix that names a file's format, and its compression suffix if any:
    ``a.jsonl.gz`` -> ``(".jsonl", ".gz")``, ``a.csv`` -> ``(".csv", None)``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def open_data_file(path: Path) -> Any:
    """``path`` opened for reading bytes, line by line, decompressed as its suffix says (as ``datasets`` reads it)."""
    import io

    import fsspec

    # A buffered reader on top: zstandard's stream reads blocks but has no lines.
    return io.BufferedReader(fsspec.open(str(path), "rb", compression="infer").open())


def _builder_for(path: str, files: list[Path]) -> str:
    kinds = {data_suffix(file) for file in files}
    builders = {FILE_BUILDERS.get(suffix) for suffix, _ in kinds}
    if None in builders or len(builders) != 1:
        known = ", ".join(sorted(FILE_BUILDERS))
        found = ", ".join(sorted(suffix + (compression or "") for suffix, compression in kinds))
        raise DataError(
            f"{path}: cannot read {found} files as one dataset; use one of {known} "
            f"(JSON and CSV may be compressed: {', '.join(COMPRESSION_SUFFIXES)})"
        )
    builder = builders.pop()
    compressed = sorted({compression for _, compression in kinds if compression})
    if compressed and builder not in COMPRESSIBLE:
        raise DataError(
            f"{path}: {builder} files compress their own contents and cannot be read {compressed[0]}-compressed; "
            "decompress it"
        )
    return builder


def _read_files(path: str, files: list[Path], split: str | None, text_columns: Collection[str]) -> tuple[Any, RowNamer]:
    builder = _builder_for(path, files)
    one_file_suffix = data_suffix(files[0])[0] if len(files) == 1 else None
    namer = RowNamer(str(path), jsonl_path=files[0] if one_file_suffix == ".jsonl" else None)
    if len(files) > 1:
        namer.shards = files
        if builder == "json":
            check_shards_agree(files, text_columns)
    digest = files_digest(files)
    try:
        with quiet_datasets(show_progress=sum(file.stat().st_size for file in files) >= PROGRESS_BYTES):
            dataset = _load_dataset(
                builder, data_files=[str(file) for file in files], split="train", description=_cache_key(digest)
            )
    except Exception as error:
        _name_the_bad_line(files, builder, text_columns)
        if all(_is_blank(file) for file in files):
            from datasets import Dataset

            return Dataset.from_dict({}), namer  # reported as "no examples found"
        raise DataError(f"{path}: cannot read as {builder}: {_cause(error)}") from None
    if split not in (None, "train"):
        raise DataError(f"{path}: a data file has one split ('train'), not '{split}'; use eval_fraction to carve one")
    dataset = with_fingerprint(dataset, f"{builder}-{digest}")
    if one_file_suffix == ".json" and len(dataset) == 1:
        dataset = _rows_of_column_object(dataset, path)
    return dataset, namer


def check_shards_agree(files: list[Path], text_columns: Collection[str]) -> None:
    """Raise when a JSON-lines shard gives a key another kind of value than the shards before it did.

    ``datasets`` types each column by the first shard and converts the later ones' values to that
    type where Arrow can (a number to a string, ``5`` -> ``"5"``), silently; reading a glob, the first
    :data:`SHARD_SAMPLE_LINES` lines of every shard are compared here first. (A kind that changes
    deeper inside one shard is not seen, as within one file of more than ``datasets``' 10 MB chunk.)
    """
    first_seen: dict[str, tuple[str, Path, int]] = {}
    for file in files:
        scan_json_lines(file, text_columns, first_seen=first_seen, max_lines=SHARD_SAMPLE_LINES)


def _name_the_bad_line(files: list[Path], builder: str, text_columns: Collection[str]) -> None:
    """After ``datasets`` failed to read ``files``: raise naming the first unreadable JSON line, if any."""
    if builder != "json":
        return
    for file in files:
        try:
            scan_json_lines(file, text_columns)
        except DataError:
            raise
        except Exception:  # not even decompressible: datasets' own error says why
            return


def files_digest(files: list[Path]) -> str:
    """A digest of the bytes of ``files``, in order (xxhash, read a block at a time)."""
    import xxhash

    digest = xxhash.xxh3_128()
    for file in files:
        one = xxhash.xxh3_128()
        with file.open("rb") as handle:
            while block := handle.read(1 << 22):
                one.update(block)
        digest.update(one.digest())
    return digest.hexdigest()


def _cache_key(digest: str) -> str:
    """What goes into the ``datasets`` cache key beside the path and mtime ``datasets`` puts there.

    ``description`` is a field of every builder config and so part of the config id that
    names the cache directory; a file whose bytes changed is read again, whatever its mtime.
    """
    return f"flux content digest {digest}"


def with_fingerprint(dataset: Any, fingerprint: str) -> Any:
    """``dataset`` (the same memory-mapped table) under a fingerprint of its content.

    ``datasets`` derives the fingerprint of a loaded file from its cache directory, so from
    the path and mtime; this one changes with the bytes read and nothing else, and every
    ``map`` after it caches under a fingerprint derived from it.
    """
    from datasets import Dataset
    from datasets.fingerprint import Hasher

    return Dataset(dataset.data, info=dataset.info, split=dataset.split, fingerprint=Hasher.hash(fingerprint))


def _rows_of_column_object(dataset: Any, path: str) -> Any:
    """The rows of a ``.json`` file holding one object of columns (``{"prompt": [...], ...}``).

    ``datasets`` reads one JSON object as one row. When every value is a list and none is a
    list of chat messages (one conversation stays one row), the object is a dataset by
    columns: list item ``i`` of every column makes row ``i``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.data.table
    fields = list(table.schema)
    if not fields or not all(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in fields):
        return dataset
    if any(pa.types.is_struct(field.type.value_type) for field in fields):
        return dataset
    lengths = {field.name: pc.list_value_length(table.column(field.name))[0].as_py() for field in fields}
    if len(set(lengths.values())) != 1:
        sizes = ", ".join(f"'{name}' {length}" for name, length in lengths.items())
        raise DataError(
            f"{path}: one JSON object of columns whose lists differ in length ({sizes}); give every column one "
            "value per row, or write one JSON object per row (JSON lines)"
        )
    with quiet_datasets(show_progress=False):
        rows = dataset.with_format("arrow").map(_column_lists_to_rows, batched=True, desc="Reading columns")
    return rows.with_format(None)


def _column_lists_to_rows(table: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.table({name: pc.list_flatten(table.column(name)) for name in table.column_names})


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
    files = sorted(
        file
        for file in directory.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(directory).parts)
    )
    digest = files_digest(files)
    try:
        with quiet_datasets():
            loaded = _load_dataset(str(directory), name=name, description=_cache_key(digest))
    except Exception as error:
        raise DataError(f"{directory}: not a saved dataset nor a folder of data files: {_cause(error)}") from None
    dataset = pick_split(loaded, split, str(directory))
    return with_fingerprint(dataset, f"folder-{digest}-{name}-{dataset.split}"), namer


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


def scan_json_lines(
    path: Path,
    text_columns: Collection[str] = (),
    first_seen: dict[str, tuple[str, Path, int]] | None = None,
    max_lines: int | None = None,
) -> None:
    """Read ``path`` line by line (never all at once) and raise on the first unreadable line.

    The error path of JSON loading: ``datasets`` reports a broken file without naming
    the line. A line is unreadable when it is not UTF-8, not a JSON object, or gives a
    key a value of another type than earlier lines did (``text_columns`` must hold
    strings or chat message lists). Returns quietly when no line is.

    ``first_seen`` (key -> kind of value, file and line it was first seen on) carries what earlier
    files held, to compare shards; ``max_lines``: read no further than that many lines.
    """
    if data_suffix(path)[0] != ".jsonl":
        return
    first_seen = {} if first_seen is None else first_seen
    with open_data_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if max_lines is not None and number > max_lines:
                return
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
                first_kind, first_file, first_line = first_seen.setdefault(key, (kind, path, number))
                if kind != first_kind:
                    there = f"on line {first_line}" if first_file == path else f"in {first_file}:{first_line}"
                    raise DataError(
                        f"{where}: '{key}' is {describe_kind(kind)} here but {describe_kind(first_kind)} "
                        f"{there}; use one kind of value per key"
                    )


def _is_blank(path: Path) -> bool:
    """Whether ``path`` holds nothing but whitespace (read a block at a time)."""
    try:
        with open_data_file(path) as handle:
            while block := handle.read(1 << 20):
                if block.strip():
                    return False
    except Exception:  # a compressed file that does not decompress is not blank
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
