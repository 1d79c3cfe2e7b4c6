"""Stage 4 of loading data: check every row in batches; warn about data that would train badly.

Gets the normalised dataset and its canonical :class:`~flux_core.data.shapes.Shape` from
:mod:`flux_core.data.normalise` (and, before a normaliser runs, the rows it will read),
raises one ``DataError`` naming the first bad row, and hands the checked dataset back to
:mod:`flux_core.data.load`, which splits off eval rows.

A text column holds plain strings or chat message lists (``[{"role", "content"}]``).
Columns Arrow could type as one of those two are checked with vectorised ``pyarrow``
kernels, a batch at a time, so a million rows are checked without ever becoming
Python objects. (Columns holding values of mixed kinds, which ``datasets`` keeps as
JSON, were already read row by row when their shape was detected.)
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Collection, Iterator, Mapping

from flux_core.data.formats import BATCH_ROWS, MESSAGE_EXAMPLE, TEXT, DataFormat
from flux_core.data.shapes import Shape
from flux_core.errors import DataError

RowNamer = Callable[[int], str]


def check(dataset: Any, fmt: DataFormat, shape: Shape, where: RowNamer) -> None:
    """Raise at the first bad row of ``shape``'s columns (and ``fmt``'s label keys); warn, one line
    each, about data that would train badly: preference pairs with identical or empty completions."""
    pairs = fmt.name == "preferences"
    counters = _pair_counters(shape.kinds["chosen"]) if pairs else None
    counts = check_rows(dataset, shape.kinds, where, shape.needs, allow_empty=shape.allow_empty, counters=counters)
    for key in fmt.label_keys:
        check_labels(dataset, key, where, shape.needs)
    if not pairs:
        return
    total = len(dataset)
    # stacklevel 3: the warning points at the code that called load_data, not at Flux
    if counts["identical"]:
        warnings.warn(
            f"{where.name}: {counts['identical']} of {total} pairs have chosen == rejected; "
            "they carry no preference signal",
            UserWarning,
            stacklevel=3,
        )
    if counts["empty"]:
        message = f"{where.name}: {counts['empty']} of {total} pairs have an empty chosen or rejected completion"
        warnings.warn(message, UserWarning, stacklevel=3)


def _pair_counters(kind: str) -> dict[str, Any]:
    """Row predicates for the pair warnings: identical completions, an empty completion."""
    import pyarrow.compute as pc

    def identical(batch):
        return pc.equal(rendered(batch.column("chosen"), kind), rendered(batch.column("rejected"), kind))

    def empty(batch):
        return pc.or_(*(_is_blank(contents(batch.column(key), kind)) for key in ("chosen", "rejected")))

    return {"identical": identical, "empty": empty}


def _is_blank(values: Any) -> Any:
    import pyarrow.compute as pc

    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)


def arrow_batches(dataset: Any, columns: list[str]) -> Iterator[tuple[int, Any]]:
    """``(offset, pyarrow.Table)`` batches of ``columns``; memory stays one batch.

    A dataset that is one Arrow file on disk (what ``load_dataset`` and ``map`` make) is
    read with plain file reads rather than through its memory map, so checking a
    million rows does not leave every page of the file in the process's resident memory.
    """
    path = _single_arrow_file(dataset)
    if path is None:
        view = dataset.select_columns(columns).with_format("arrow")
        offset = 0
        for batch in view.iter(batch_size=BATCH_ROWS):
            yield offset, batch
            offset += batch.num_rows
        return
    yield from _streamed_batches(path, [dataset.column_names.index(column) for column in columns], columns)


def _single_arrow_file(dataset: Any) -> str | None:
    """The Arrow file holding exactly ``dataset``'s rows in order, if there is one."""
    import pyarrow as pa
    from datasets.table import MemoryMappedTable

    if dataset._indices is not None or not isinstance(dataset.data, MemoryMappedTable):
        return None
    with pa.OSFile(dataset.data.path) as source:
        file_types = pa.ipc.open_stream(source).schema.types
    # Column operations replayed on the map (renames keep order and types; a drop does not).
    return dataset.data.path if file_types == dataset.data.schema.types else None


def _streamed_batches(path: str, positions: list[int], names: list[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa

    offset, pending = 0, []
    with pa.OSFile(path) as source:
        for record_batch in pa.ipc.open_stream(source):
            pending.append(record_batch.select(positions).rename_columns(names))
            if sum(batch.num_rows for batch in pending) >= BATCH_ROWS:
                table = pa.Table.from_batches(pending)
                yield offset, table
                offset, pending = offset + table.num_rows, []
    if pending:
        yield offset, pa.Table.from_batches(pending)


def update_digest(digest: Any, dataset: Any, columns: list[str]) -> None:
    """Feed ``columns`` of ``dataset`` to a ``hashlib`` digest, one Arrow IPC batch at a time."""
    import pyarrow as pa

    for _, batch in arrow_batches(dataset, columns):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        digest.update(sink.getvalue())


def one_array(values: Any) -> Any:
    """A ``pyarrow.Array`` from a (possibly chunked) column."""
    return values.combine_chunks() if hasattr(values, "combine_chunks") else values


def first_true(mask: Any) -> int | None:
    """Index of the first true value of a boolean array (nulls count as false)."""
    import pyarrow.compute as pc

    index = pc.index(pc.fill_null(mask, False), True).as_py()
    return None if index < 0 else index


def check_rows(
    dataset: Any,
    kinds: Mapping[str, str],
    where: RowNamer,
    needs: str,
    allow_empty: Collection[str] = (),
    counters: Mapping[str, Callable[[Any], Any]] | None = None,
) -> dict[str, int]:
    """One pass over ``dataset``: raise ``DataError`` at the first row whose text columns
    (``kinds``: column -> ``text``/``chat``) are missing or malformed; count rows.

    Empty strings are errors except in ``allow_empty`` columns (completions: counted and
    reported as a warning instead). ``counters`` map a name to ``predicate(pyarrow.Table)
    -> boolean array``; the result holds how many rows each marked.
    """
    import pyarrow.compute as pc

    counters = counters or {}
    totals = dict.fromkeys(counters, 0)
    for offset, batch in arrow_batches(dataset, list(kinds)):
        problems = [
            problem
            for column, kind in kinds.items()
            if (problem := _first_problem(one_array(batch.column(column)), kind, column, column in allow_empty, needs))
        ]
        if problems:
            row, message = min(problems)
            raise DataError(f"{where(offset + row)}: {message}")
        for name, predicate in counters.items():
            totals[name] += pc.sum(pc.fill_null(predicate(batch), False)).as_py() or 0
    return totals


def _first_problem(values: Any, kind: str, column: str, allow_empty: bool, needs: str) -> tuple[int, str] | None:
    import pyarrow.compute as pc

    candidates = []
    missing = first_true(pc.is_null(values))
    if missing is not None:
        candidates.append((missing, f"missing key '{column}' (each example needs {needs})"))
    if kind == TEXT:
        invalid = _first_invalid_utf8(values)
        if invalid is not None:  # the string kernels below cannot read such a batch
            return min(candidates + [(invalid, f"'{column}' is not UTF-8 text; save the file as UTF-8")])
        if not allow_empty:
            empty = first_true(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
            if empty is not None:
                candidates.append((empty, f"'{column}' is empty"))
    else:
        empty = first_true(pc.equal(pc.list_value_length(values), 0))
        if empty is not None:
            candidates.append((empty, f"'{column}' must be a string or a list of chat messages, not an empty list"))
        bad_message = _first_bad_message(values)
        if bad_message is not None:
            row, position = bad_message
            candidates.append((row, f"'{column}'[{position}] must be a message like {MESSAGE_EXAMPLE}"))
    return min(candidates, default=None)


def _first_invalid_utf8(values: Any) -> int | None:
    """Index of the first string that is not valid UTF-8 (Arrow's JSON reader lets such bytes in)."""
    import pyarrow as pa

    try:
        values.validate(full=True)
        return None
    except pa.ArrowInvalid:
        for index in range(len(values)):  # only on the error path
            try:
                values[index].as_py()
            except UnicodeDecodeError:
                return index
        return None


def _first_bad_message(values: Any) -> tuple[int, int] | None:
    """(row, message index) of the first message without a string role and content."""
    import pyarrow as pa
    import pyarrow.compute as pc

    messages = pc.list_flatten(values)
    struct_type = messages.type
    names = {struct_type.field(i).name: struct_type.field(i).type for i in range(struct_type.num_fields)}
    if len(messages) == 0:
        return None
    rows = pc.list_parent_indices(values)
    for name in ("role", "content"):
        if name not in names or not (pa.types.is_string(names[name]) or pa.types.is_large_string(names[name])):
            flat = 0
            break
    else:
        missing = pc.or_(pc.is_null(messages.field("role")), pc.is_null(messages.field("content")))
        flat = first_true(missing)
        if flat is None:
            return None
    row = rows[flat].as_py()
    start = values.offsets[row].as_py() - values.offsets[0].as_py()
    return row, flat - start


def check_labels(dataset: Any, column: str, where: RowNamer, needs: str) -> None:
    """Raise ``DataError`` naming the first row whose ``column`` is missing or not a boolean."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def bad(row: Any, value: Any) -> DataError:
        problem = f"missing key '{column}' (each example needs {needs})"
        if value is not None:
            problem = f"'{column}' must be true or false, not {value!r}"
        return DataError(f"{row}: {problem}")

    if column not in dataset.column_names:
        raise DataError(f"{where(0)}: missing key '{column}' (each example needs {needs})")
    jsonl_path = getattr(where, "jsonl_path", None)
    if jsonl_path is not None and not pa.types.is_boolean(dataset.data.schema.field(column).type):
        # the JSON reader turns true/false into strings when another line holds one: read the file's own values
        with open(jsonl_path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip() and not isinstance(value := json.loads(line).get(column), bool):
                    raise bad(f"{where.name}:{number}", value)
    for offset, batch in arrow_batches(dataset, [column]):
        values = one_array(batch.column(column))
        if pa.types.is_boolean(values.type):
            missing = first_true(pc.is_null(values))
            if missing is not None:
                raise bad(where(offset + missing), None)
            continue
        for index, value in enumerate(values.to_pylist()):  # not a boolean column: name the first bad row
            if not isinstance(value, bool):
                raise bad(where(offset + index), value)


# ----------------------------------------------------------------- counts for warnings


def rendered(values: Any, kind: str) -> Any:
    """One string per row: the text itself, or a chat list's roles and contents joined."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = one_array(values)
    if kind == TEXT:
        return values
    messages = pc.list_flatten(values)
    turns = pc.binary_join_element_wise(messages.field("role"), messages.field("content"), "\x00")
    offsets = pc.subtract(values.offsets, values.offsets[0])
    return pc.binary_join(pa.ListArray.from_arrays(offsets, turns), "\x01")


def contents(values: Any, kind: str) -> Any:
    """One string per row: the text, or every message's content concatenated."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = one_array(values)
    if kind == TEXT:
        return values
    offsets = pc.subtract(values.offsets, values.offsets[0])
    return pc.binary_join(pa.ListArray.from_arrays(offsets, pc.list_flatten(values).field("content")), "")
