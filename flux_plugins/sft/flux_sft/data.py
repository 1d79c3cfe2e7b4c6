"""SFT data: one of three shapes, checked before any model loads; preference pairs -> prompt + chosen.

Core brings practitioners' layouts to these shapes first (``flux_core.data.shapes.LAYOUTS``):
ShareGPT ``conversations`` become ``messages``, Alpaca rows ``prompt`` + ``completion``.
"""

from __future__ import annotations

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
    return dataset


def chosen_completions(pairs: Any, num_proc: int | None = None) -> Any:
    """Checked preference pairs -> prompt + completion examples on the chosen reply (rejected is dropped)."""
    return pairs.remove_columns("rejected").rename_column("chosen", "completion")
