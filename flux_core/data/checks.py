"""Stage 4 of loading data: check every row in batches; warn about data that would train badly.

Gets the normalised dataset and its canonical :class:`~flux_core.data.shapes.Shape` from
:mod:`flux_core.data.normalise` (and, before a normaliser runs, the rows it will read),
raises one ``DataError`` naming the first bad row, and hands the checked dataset back to
:mod:`flux_core.data.load`, which splits off eval rows.

A text column holds plain strings or chat message lists (``[{"role", "content"}]``).
Columns Arrow could type as one of those two are checked with vectorised ``pyarrow``
kernels, a batch at a time, so a million rows are checked without ever becoming
Python objects. (Columns holding values of mixed kinds, which ``datasets`` keeps as
JSON, were already read row by row when their shape was detected; conversations with tool
calls, stored as JSON messages, are read row by row here.) Last, one warning names the
columns training never reads (:func:`warn_unused_columns`).
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Collection, Mapping

from flux_core.data.arrow import arrow_batches, first_true, one_array
from flux_core.data.formats import MESSAGE_EXAMPLE, TEXT, DataFormat, is_message
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


def update_digest(digest: Any, dataset: Any, columns: list[str]) -> None:
    """Feed ``columns`` of ``dataset`` to a ``hashlib`` digest, one Arrow IPC batch at a time."""
    import pyarrow as pa

    for _, batch in arrow_batches(dataset, columns):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        digest.update(sink.getvalue())


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
    if isinstance(messages.type, pa.JsonType):
        return _first_bad_json_message(values)
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


def _first_bad_json_message(values: Any) -> tuple[int, int] | None:
    """The same for JSON messages (conversations with tool calls: few, so read row by row)."""
    for row, conversation in enumerate(values.to_pylist()):
        for position, message in enumerate(conversation or ()):
            if not is_message(json.loads(message) if isinstance(message, str) else message):
                return row, position
    return None


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
    """One string per row: the text itself, or a chat list's roles and contents joined (JSON messages: their JSON)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = one_array(values)
    if kind == TEXT:
        return values
    messages = pc.list_flatten(values)
    if isinstance(messages.type, pa.JsonType):
        turns = messages.storage
    else:
        turns = pc.binary_join_element_wise(messages.field("role"), messages.field("content"), "\x00")
    offsets = pc.subtract(values.offsets, values.offsets[0])
    return pc.binary_join(pa.ListArray.from_arrays(offsets, turns), "\x01")


def contents(values: Any, kind: str) -> Any:
    """One string per row: the text, or every message's content concatenated (a tool call counts as content)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = one_array(values)
    if kind == TEXT:
        return values
    messages = pc.list_flatten(values)
    if isinstance(messages.type, pa.JsonType):
        parsed = (json.loads(message) for message in messages.storage.to_pylist())
        messages = pa.array([message.get("content") or json.dumps(message.get("tool_calls")) for message in parsed])
    else:
        messages = messages.field("content")
    offsets = pc.subtract(values.offsets, values.offsets[0])
    return pc.binary_join(pa.ListArray.from_arrays(offsets, messages), "")


# ----------------------------------------------------------------- columns training never reads


def warn_unused_columns(dataset: Any, fmt: DataFormat, shape: str | None, trained_by: str, where: RowNamer) -> None:
    """One warning naming the columns of ``dataset`` that training on ``fmt`` never reads (``trained_by``: who
    trains on it; ``shape``: what was detected), so that no column is dropped silently. Formats that hand
    every column on (prompts: to reward functions) have none."""
    if fmt.also_used is None:
        return
    used = set(fmt.text_keys + fmt.alternative_keys + fmt.label_keys + fmt.also_used)
    unused = [column for column in dataset.column_names if column not in used]
    if not unused:
        return
    named = ", ".join(f"'{column}'" for column in unused)
    subject = f"column {named} is" if len(unused) == 1 else f"columns {named} are"
    detected = f" (shape: {shape})" if shape else ""
    warnings.warn(
        f"{where.name}: {subject} not used by {trained_by}{detected}; training ignores "
        f"{'it' if len(unused) == 1 else 'them'} (map a column that holds training text with data.columns)",
        UserWarning,
        stacklevel=3,
    )
