"""Stage 2 of loading data: detect which shape a dataset's rows are in.

Gets the dataset :mod:`flux_core.data.sources` read (its columns already mapped onto the
format's names) and hands :mod:`flux_core.data.normalise` a :class:`Shape`: which layout
the rows are in, and what each column it reads holds (``text`` or ``chat``). Detection
reads the Arrow schema, not the rows, except for a column of mixed values, which is read
row by row to name the first row that differs.

``SHAPES`` lists each format's detectors, tried in order; the first that matches wins:

- preferences: implicit prompt (no ``prompt``; Anthropic HH-RLHF,
  trl-lib/ultrafeedback_binarized), a string prompt with full conversations
  (HuggingFaceH4/ultrafeedback_binarized), explicit pairs (canonical);
- prompts: a ``messages`` conversation, a ``prompt`` (canonical);
- any other (a plugin's) format: its text keys, all strings or all chat (canonical).

A new shape is one detector here and one normaliser in ``normalise.NORMALISERS`` under the
same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from flux_core.data.formats import BATCH_ROWS, CHAT, TEXT, DataFormat, column_kind, describe_kind, value_kind
from flux_core.errors import DataError

# Shape names: what a detector found, and the key of its normaliser.
IMPLICIT_PROMPT = "implicit prompt"
PROMPT_STRING_CONVERSATIONS = "string prompt with conversations"
EXPLICIT_PAIRS = "explicit pairs"
MESSAGES = "messages"
PROMPT = "prompt"
TEXT_KEYS = "text keys"

COMPLETIONS = ("chosen", "rejected")
# Completes "each example needs ..." in errors; other formats need their text and label keys.
NEEDS = {"prompts": "prompt (or messages)"}


@dataclass(frozen=True)
class Shape:
    """What detection found: the rows' layout and what the columns read in it hold."""

    name: str
    kinds: dict[str, str]  # column -> text or chat: the columns its normaliser and the checks read
    needs: str  # completes "each example needs ..." in errors
    canonical: bool = True  # the format's own columns already: nothing to normalise
    allow_empty: tuple[str, ...] = ()  # columns where an empty string is a warning, not an error


class Columns:
    """A dataset's columns as detectors see them: which exist, and what each holds (found once)."""

    def __init__(self, dataset: Any, where: Any, needs: str):
        self.dataset, self.where, self.needs = dataset, where, needs
        self.names = set(dataset.column_names)
        self._kinds: dict[str, str] = {}

    def __contains__(self, column: str) -> bool:
        return column in self.names

    def kinds(self, columns: tuple[str, ...]) -> dict[str, str]:
        for column in columns:
            if column not in self._kinds:
                self._kinds[column] = text_kind(self.dataset, column, self.where, self.needs)
        return {column: self._kinds[column] for column in columns}


def detect_shape(dataset: Any, fmt: DataFormat, where: Any) -> Shape:
    """The shape ``dataset`` is in as ``fmt`` data; raise when it is in none of them."""
    columns = Columns(dataset, where, needs_of(fmt))
    for detector in SHAPES.get(fmt.name, PLUGIN_SHAPES):
        shape = detector(columns, fmt)
        if shape is not None:
            return shape
    raise AssertionError(f"no shape detector matched format '{fmt.name}'")  # each list ends in a catch-all


def needs_of(fmt: DataFormat) -> str:
    return NEEDS.get(fmt.name) or ", ".join(fmt.text_keys + fmt.label_keys)


def gives_preference_pairs(dataset: Any, fmt: DataFormat) -> bool:
    """Whether ``dataset`` holds preference pairs instead of ``fmt``'s keys, for a format that converts them."""
    own = set(fmt.text_keys + fmt.label_keys) - {"prompt"}
    columns = set(dataset.column_names)
    return bool(fmt.from_preferences) and set(COMPLETIONS) <= columns and not own & columns


# ----------------------------------------------------------------- preference pairs


def _pair_kinds(columns: Columns, keys: tuple[str, ...]) -> dict[str, str]:
    kinds = columns.kinds(keys)
    if kinds["chosen"] != kinds["rejected"]:
        raise DataError(f"{columns.where(0)}: chosen and rejected must both be strings or both be chat message lists")
    if kinds.get("prompt") == CHAT and kinds["chosen"] == TEXT:
        raise DataError(
            f"{columns.where(0)}: 'prompt' is a chat message list but chosen and rejected are strings; use one kind"
        )
    return kinds


def implicit_prompt(columns: Columns, fmt: DataFormat) -> Shape | None:
    """No ``prompt``: chosen and rejected each hold the whole exchange."""
    if "prompt" in columns:
        return None
    kinds = _pair_kinds(columns, COMPLETIONS)
    return Shape(IMPLICIT_PROMPT, kinds, columns.needs, canonical=False, allow_empty=COMPLETIONS)


def prompt_string_with_conversations(columns: Columns, fmt: DataFormat) -> Shape | None:
    """A string prompt, and chosen and rejected as conversations that may repeat it."""
    kinds = _pair_kinds(columns, ("prompt", *COMPLETIONS))
    if kinds["prompt"] == TEXT and kinds["chosen"] == CHAT:
        return Shape(PROMPT_STRING_CONVERSATIONS, kinds, columns.needs, canonical=False, allow_empty=COMPLETIONS)
    return None


def explicit_pairs(columns: Columns, fmt: DataFormat) -> Shape:
    """prompt, chosen and rejected, all strings or all chat message lists."""
    return Shape(EXPLICIT_PAIRS, _pair_kinds(columns, ("prompt", *COMPLETIONS)), columns.needs, allow_empty=COMPLETIONS)


# ----------------------------------------------------------------- prompts


def messages_conversation(columns: Columns, fmt: DataFormat) -> Shape | None:
    """No ``prompt`` but a ``messages`` conversation: the prompt is in it."""
    if "prompt" in columns or "messages" not in columns:
        return None
    if columns.kinds(("messages",))["messages"] != CHAT:
        raise DataError(f"{columns.where(0)}: 'messages' must be a list of chat messages")
    return Shape(MESSAGES, {"messages": CHAT}, columns.needs, canonical=False)


def prompt(columns: Columns, fmt: DataFormat) -> Shape:
    """A ``prompt``, a string or a chat message list."""
    return Shape(PROMPT, columns.kinds(("prompt",)), columns.needs)


# ----------------------------------------------------------------- a plugin's format


def text_keys(columns: Columns, fmt: DataFormat) -> Shape:
    """Every text key present, non-empty, strings or chat message lists, one kind in all of them."""
    kinds = columns.kinds(fmt.text_keys)
    first = fmt.text_keys[0]
    for key, kind in kinds.items():
        if kind != kinds[first]:
            raise DataError(
                f"{columns.where(0)}: '{key}' is {describe_kind(kind)} but '{first}' is "
                f"{describe_kind(kinds[first])}; use one kind of value for all of them"
            )
    return Shape(TEXT_KEYS, kinds, columns.needs)


Detector = Callable[[Columns, DataFormat], "Shape | None"]
SHAPES: dict[str, tuple[Detector, ...]] = {
    "preferences": (implicit_prompt, prompt_string_with_conversations, explicit_pairs),
    "prompts": (messages_conversation, prompt),
}
PLUGIN_SHAPES: tuple[Detector, ...] = (text_keys,)


# ----------------------------------------------------------------- what a column holds


def text_kind(dataset: Any, column: str, where: Any, needs: str) -> str:
    """``text`` or ``chat``: what ``column`` holds. Raise when it is missing or holds anything else.

    Decided from the Arrow type alone, except for a column of mixed values, which is read
    row by row to name the first row that differs. ``needs`` completes the
    missing-key message ("each example needs ...").
    """
    if column not in dataset.column_names:
        raise DataError(f"{where(0)}: missing key '{column}' (each example needs {needs})")
    return column_kind(dataset, column) or _check_python_values(dataset, column, where, needs)


def _check_python_values(dataset: Any, column: str, where: Any, needs: str) -> str:
    """Row-by-row check of a column Arrow could not type as text or chat (mixed or wrong values)."""
    first_kind: str | None = None
    offset = 0
    for batch in dataset.select_columns([column]).iter(batch_size=BATCH_ROWS):
        for index, value in enumerate(batch[column]):
            row = offset + index
            if value is None:
                raise DataError(f"{where(row)}: missing key '{column}' (each example needs {needs})")
            kind = value_kind(value, column, True, lambda row=row: where(row))
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                raise DataError(
                    f"{where(row)}: '{column}' is {describe_kind(kind)} here but {describe_kind(first_kind)} in "
                    "earlier rows; use one kind of value per key"
                )
        offset += len(batch[column])
    if first_kind is None:
        raise DataError(f"{where(0)}: missing key '{column}' (each example needs {needs})")
    return first_kind
