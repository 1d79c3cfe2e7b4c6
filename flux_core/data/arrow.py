"""Reading a dataset's Arrow columns a batch at a time, and the two ``pyarrow`` idioms every stage uses.

Not a stage: the data pipeline's stages (:mod:`flux_core.data.load`) read columns through
:func:`arrow_batches`, so memory stays one batch whatever the dataset's size.
"""

from __future__ import annotations

from typing import Any, Iterator

from flux_core.data.formats import BATCH_ROWS


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


def one_array(values: Any) -> Any:
    """A ``pyarrow.Array`` from a (possibly chunked) column."""
    return values.combine_chunks() if hasattr(values, "combine_chunks") else values


def first_true(mask: Any) -> int | None:
    """Index of the first true value of a boolean array (nulls count as false)."""
    import pyarrow.compute as pc

    index = pc.index(pc.fill_null(mask, False), True).as_py()
    return None if index < 0 else index
