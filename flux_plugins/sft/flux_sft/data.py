"""SFT data: one of three shapes, checked before any model loads; preference pairs -> prompt + chosen.

Core brings practitioners' layouts to these shapes first (``flux_core.data.shapes.LAYOUTS``):
ShareGPT ``conversations`` become ``messages``, Alpaca rows ``prompt`` + ``completion``.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from flux_core import CHAT, TEXT, DataError, check_rows, describe_kind, text_kind

NEEDS = "messages, or prompt and completion, or text"


def check_examples(dataset: Any, where: Any, num_proc: int | None = None) -> Any:
    """Check ``dataset`` as one SFT shape (TRL's order: prompt + completion, messages, text) and return it.

    - ``prompt`` + ``completion``: strings, or chat message lists (both the same kind);
    - ``messages``: a chat message list per row;
    - ``text``: a string per row.

    A bad row is a one-line :class:`DataError` naming its file and line (or row) and key.
    """
    columns = set(dataset.column_names)
    check_one_shape(dataset, where)
    if "prompt" in columns or "completion" in columns:
        for key in ("prompt", "completion"):
            if key not in columns:
                raise DataError(f"{where(0)}: missing key '{key}' (each example needs {NEEDS})")
        kinds = {key: text_kind(dataset, key, where, NEEDS) for key in ("prompt", "completion")}
        if kinds["prompt"] != kinds["completion"]:
            raise DataError(
                f"{where(0)}: 'completion' is {describe_kind(kinds['completion'])} but 'prompt' is "
                f"{describe_kind(kinds['prompt'])}; use one kind of value for both"
            )
    elif "messages" in columns:
        kinds = {"messages": text_kind(dataset, "messages", where, NEEDS)}
        if kinds["messages"] != CHAT:
            raise DataError(
                f'{where(0)}: \'messages\' must be a list of chat messages ({{"role": ..., "content": ...}})'
            )
    elif "text" in columns:
        kinds = {"text": text_kind(dataset, "text", where, NEEDS)}
        if kinds["text"] != TEXT:
            raise DataError(f"{where(0)}: 'text' must be a string")
    else:
        present = ", ".join(sorted(columns)) or "none"
        raise DataError(
            f"{where(0)}: no SFT columns: each example needs {NEEDS}, or ShareGPT conversations, or Alpaca "
            f"instruction and output (columns: {present}); map yours with data: "
            "{path: ..., columns: {text: COLUMN}}"
        )
    check_rows(dataset, kinds, where, NEEDS)
    if "messages" in kinds:
        check_assistant_turns(dataset, where)
    return dataset


def check_assistant_turns(dataset: Any, where: Any) -> None:
    """Warn (one line: how many, and the first rows) about conversations without an assistant turn,
    which give SFT no reply to learn; raise ``DataError`` when no conversation has one.

    Reads only the messages' roles, a batch at a time (role names are canonical here: the core
    maps ``gpt``, ``bot`` and ``data.roles`` onto ``assistant`` first).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    count, first, total = 0, [], 0
    for batch in dataset.select_columns(["messages"]).with_format("arrow").iter(batch_size=10_000):
        conversations = batch.column("messages").combine_chunks()
        messages = pc.list_flatten(conversations)
        if isinstance(messages.type, pa.JsonType):  # conversations with tool calls are stored as JSON messages
            roles = pa.array([json.loads(message).get("role") for message in messages.storage.to_pylist()])
        else:
            roles = messages.field("role")
        replies = pc.fill_null(pc.equal(roles, "assistant"), False).to_numpy(zero_copy_only=False)
        has_reply = np.zeros(len(conversations), dtype=bool)
        has_reply[pc.list_parent_indices(conversations).to_numpy()[replies]] = True
        rows = np.flatnonzero(~has_reply)
        count += len(rows)
        first += [total + int(row) for row in rows[: max(0, 3 - len(first))]]
        total += len(conversations)
    if count and count == total:
        raise DataError(
            f"{where.name}: no conversation has an assistant turn ({total} rows), so SFT has no reply to learn; add "
            "the replies, or map your reply role onto assistant with data.roles (e.g. {assistant: [agent]})"
        )
    if count:
        shown = ", ".join(where(row) for row in first) + (", ..." if count > len(first) else "")
        warnings.warn(
            f"{where.name}: {count} of {total} conversations have no assistant turn, so nothing to learn a reply "
            f"from ({shown})",
            UserWarning,
            stacklevel=2,
        )


# The three shapes, by the columns that make a row one of them, in the order they are read (TRL's):
# a row holding several is the first.
SHAPES = {"prompt and completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}


def check_one_shape(dataset: Any, where: Any) -> None:
    """Raise ``DataError`` naming the first row in another shape than the first row (a file
    mixing ``messages`` rows with ``prompt`` + ``completion`` rows).

    Runs only when the columns of more than one shape are present (JSON lines give every row
    every column, null where a row lacks the key); reads those columns' null masks, a batch at a time.
    """
    import numpy as np
    import pyarrow.compute as pc

    present = {shape: [c for c in keys if c in dataset.column_names] for shape, keys in SHAPES.items()}
    present = {shape: keys for shape, keys in present.items() if keys}
    if len(present) < 2:
        return
    names = list(present)
    first, first_row, offset = None, 0, 0
    table = dataset.select_columns([c for keys in present.values() for c in keys]).with_format("arrow")
    for batch in table.iter(batch_size=10_000):
        # held[i, row]: the row sets a column of shape names[i]
        held = np.stack(
            [
                np.logical_or.reduce([pc.is_valid(batch.column(c)).to_numpy(zero_copy_only=False) for c in keys])
                for keys in present.values()
            ]
        )
        if first is None and held.any():
            index = int(np.flatnonzero(held.any(axis=0))[0])
            first, first_row = names[int(np.argmax(held[:, index]))], offset + index
        if first is not None:
            shapes = np.argmax(held, axis=0)  # each row's shape: the first it holds
            for row in np.flatnonzero(held.any(axis=0) & (shapes != names.index(first)))[:1]:
                shape = names[int(shapes[row])]
                raise DataError(
                    f"{where(offset + int(row))}: this example is {shape} but the first one ({where(first_row)}) "
                    f"is {first}; use one shape in every example ({NEEDS})"
                )
        offset += batch.num_rows


def chosen_completions(pairs: Any, num_proc: int | None = None) -> Any:
    """Checked preference pairs -> prompt + completion examples on the chosen reply (rejected is dropped)."""
    return pairs.remove_columns("rejected").rename_column("chosen", "completion")
