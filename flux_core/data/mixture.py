"""Mixtures: training data from several sources, ``data: [a.jsonl, {path: b.jsonl, weight: 2}]``.

Each source is loaded alone by the whole pipeline (:func:`flux_core.data.load.load_data`:
read, map its columns, detect its shape, normalise into the format's columns, check), so
sources in different shapes mix: HH-RLHF's implicit prompts with explicit string pairs for
DPO, an Alpaca file with a ShareGPT file for SFT. The loaded sources are then, in order:

1. cut: ``rows: N`` keeps the first N rows of that source (as ``datasets``' ``train[:N]``
   and TRL's mixture ``fraction`` do; shuffle the file first for a random N); a source
   with fewer rows is an error;
2. reconciled: where some sources are ``messages`` conversations and others ``prompt`` +
   ``completion`` (SFT: ShareGPT and Alpaca), the latter become conversations too (a
   string prompt a user turn, its completion an assistant turn; chat lists joined), so all
   of them train through the chat template; an extra column that not every source has, or
   that holds another type in one of them, is dropped (one warning names them); a column of
   the format itself that still differs (strings in one source, chat message lists in
   another) is a one-line error naming the source;
3. mixed: with a ``weight`` on every source, ``datasets.interleave_datasets`` draws each
   next row from source i with probability ``weight_i / sum(weights)``, seeded by the run's
   ``seed`` (the same mixture for the same seed), until every source has been used whole at
   least once (``stopping_strategy="all_exhausted"``: a source whose share outgrows its
   rows repeats, none is cut short); without weights the sources are concatenated in order.

Everything stays Arrow: cuts are slices, mixing is one indices mapping over the sources'
memory-mapped tables. Errors name the source by its index and path: ``data[1] (b.jsonl): ...``.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from typing import Any

from flux_core.data.formats import CHAT, DataFormat, column_kind, describe_kind
from flux_core.data.sources import PROGRESS_ROWS, quiet_datasets
from flux_core.errors import DataError

STOPPING_STRATEGY = "all_exhausted"


@dataclass
class LoadedSource:
    """One source of a mixture after the pipeline: its normalised rows and how errors name it.

    While the next sources load, a source whose rows all live in Arrow files is kept as its
    pickle (``datasets`` pickles such a dataset as the paths of its files): the pages of its
    files that reading mapped into memory then leave the process instead of adding to the
    next source's peak memory. :meth:`rows_back` maps it again.
    """

    dataset: Any
    label: str  # data[1] (b.jsonl)
    weight: float | None = None
    rows: int | None = None
    _set_aside: bytes | None = None

    def set_aside(self) -> None:
        if self.dataset.cache_files and _memory_mapped(self.dataset):
            self._set_aside, self.dataset = pickle.dumps(self.dataset), None

    def rows_back(self) -> Any:
        if self._set_aside is not None:
            self.dataset, self._set_aside = pickle.loads(self._set_aside), None
        return self.dataset


def _memory_mapped(dataset: Any) -> bool:
    """Whether every row of ``dataset`` lives in an Arrow file (pickling it then copies no rows)."""
    from datasets.table import InMemoryTable

    return not any(isinstance(table, InMemoryTable) for table in _tables(dataset.data))


def _tables(table: Any) -> list[Any]:
    blocks = getattr(table, "blocks", None)  # a ConcatenationTable: the tables it joins
    return [part for row in blocks for block in row for part in _tables(block)] if blocks else [table]


def source_label(what: str, index: int, path: Any) -> str:
    """``data[1] (b.jsonl)``: a source of a mixture as errors name it."""
    return f"{what}[{index}] ({path})" if path is not None else f"{what}[{index}]"


def in_context(error: DataError, key: str, path: Any) -> DataError:
    """``error`` from loading source ``key`` (``data[1]``) of a mixture, naming that source and its path once."""
    message = str(error)
    if message.startswith(key):
        return DataError(message)
    if path is not None and message.startswith(str(path)):  # b.jsonl:3: ...
        return DataError(f"{key}: {message}")
    return DataError(f"{key} ({path}): {message}" if path is not None else f"{key}: {message}")


def take_rows(dataset: Any, rows: int | None, label: str) -> Any:
    """The first ``rows`` rows of ``dataset`` (all of them for ``None``); fewer is an error."""
    if rows is None:
        return dataset
    if rows > len(dataset):
        raise DataError(f"{label}: rows: {rows} asks for more rows than it has ({len(dataset)})")
    return dataset.select(range(rows))


def mix(sources: list[LoadedSource], fmt: DataFormat, seed: int, what: str) -> Any:
    """One dataset of ``fmt`` from the loaded ``sources`` (see the module docstring), mixed by ``seed``."""
    from datasets import concatenate_datasets, interleave_datasets

    parts = [take_rows(source.rows_back(), source.rows, source.label) for source in sources]
    if len(parts) == 1:
        return parts[0]
    parts = reconcile(parts, [source.label for source in sources], fmt, what)
    weights = [source.weight for source in sources]
    if all(weight is None for weight in weights):
        return concatenate_datasets(parts)
    total = sum(weights)
    return interleave_datasets(
        parts, probabilities=[weight / total for weight in weights], seed=seed, stopping_strategy=STOPPING_STRATEGY
    )


def reconcile(parts: list[Any], labels: list[str], fmt: DataFormat, what: str) -> list[Any]:
    """``parts`` with the same columns, in the same order, of the same types (see the module docstring).

    The format's own columns (text, alternative and label keys) must agree across sources;
    other columns are extra, dropped where they differ, with a warning when training would
    have read them (the load already warned about the others).
    """
    format_columns = fmt.text_keys + fmt.alternative_keys + fmt.label_keys
    parts = _conversations_where_mixed(parts)
    first = parts[0]
    shared = [column for column in first.column_names if all(column in part.column_names for part in parts)]
    for column in format_columns:
        _check_format_column(parts, labels, column)
    differing = {
        column
        for column in shared
        if column not in format_columns and any(part.features[column] != first.features[column] for part in parts)
    }
    kept = [column for column in shared if column not in differing]
    dropped = {}
    for part, label in zip(parts, labels):
        for column in part.column_names:
            if column not in kept:
                dropped.setdefault(column, label)
    if fmt.also_used is not None:  # columns training never reads: each source's load warned about them
        dropped = {column: label for column, label in dropped.items() if column in fmt.also_used}
    if dropped:
        named = ", ".join(
            f"'{column}' ({'not in every source' if column not in differing else 'another type in some'}: {label})"
            for column, label in dropped.items()
        )
        warnings.warn(
            f"{what}: mixing drops extra columns the sources do not share: {named}; map them onto one name with "
            "columns: to keep them",
            UserWarning,
            stacklevel=4,
        )
    aligned = []
    for part in parts:
        part = part.select_columns(kept)
        if part.features.arrow_schema != first.select_columns(kept).features.arrow_schema:
            part = part.cast(first.select_columns(kept).features)  # e.g. struct fields in another order
        aligned.append(part)
    return aligned


def _check_format_column(parts: list[Any], labels: list[str], column: str) -> None:
    """Raise naming the first source whose ``column`` (a format column) differs from the first source's."""
    first, first_label = parts[0], labels[0]
    for part, label in zip(parts[1:], labels[1:]):
        has, first_has = column in part.column_names, column in first.column_names
        if has != first_has:
            present, absent = (label, first_label) if has else (first_label, label)
            raise DataError(
                f"{label}: its rows have columns {', '.join(part.column_names)} but {first_label}'s have "
                f"{', '.join(first.column_names)} ('{column}' is in {present}, not in {absent}); the sources of a "
                "mixture must normalise to the same columns"
            )
        if not has or part.features[column] == first.features[column]:
            continue
        kind, first_kind = column_kind(part, column), column_kind(first, column)
        if kind != first_kind and kind is not None and first_kind is not None:
            detail = f"is {describe_kind(kind)} here but {describe_kind(first_kind)} in {first_label}"
        else:
            detail = f"holds {part.features[column]} here but {first.features[column]} in {first_label}"
        raise DataError(f"{label}: '{column}' {detail}; the sources of a mixture need one kind of value per column")


def _conversations_where_mixed(parts: list[Any]) -> list[Any]:
    """``prompt`` + ``completion`` sources as ``messages`` conversations, when another source is one."""

    def is_conversation(part: Any) -> bool:
        return "messages" in part.column_names and "prompt" not in part.column_names

    def is_completion(part: Any) -> bool:
        names = part.column_names
        return "prompt" in names and "completion" in names and "messages" not in names

    conversation = next((part for part in parts if is_conversation(part)), None)
    if conversation is None:
        return parts
    converted = []
    for part in parts:
        if is_completion(part):
            with quiet_datasets(show_progress=len(part) >= PROGRESS_ROWS):
                part = _joined(part, conversation)
        converted.append(part)
    return converted


def _joined(part: Any, conversation: Any) -> Any:
    """``part``'s prompt + completion as the ``messages`` of ``conversation``'s type."""
    return part.map(
        _prompt_completion_to_messages,
        batched=True,
        fn_kwargs={"chat": column_kind(part, "prompt") == CHAT},
        remove_columns=["prompt", "completion"],
        features=_with_messages(part, conversation.features["messages"]),
        desc="Joining prompt and completion into conversations",
    )


def _with_messages(part: Any, messages: Any) -> Any:
    from datasets import Features

    kept = {name: feature for name, feature in part.features.items() if name not in ("prompt", "completion")}
    return Features({**kept, "messages": messages})


def _prompt_completion_to_messages(batch: dict, chat: bool) -> dict:
    """Batched map: a string prompt and completion as a user and an assistant turn; chat lists joined."""
    if chat:
        return {"messages": [prompt + completion for prompt, completion in zip(batch["prompt"], batch["completion"])]}
    return {
        "messages": [
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            for prompt, completion in zip(batch["prompt"], batch["completion"])
        ]
    }
