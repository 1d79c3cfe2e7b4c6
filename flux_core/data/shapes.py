"""Stage 2 of loading data: detect which shape a dataset's rows are in.

Gets the dataset :mod:`flux_core.data.sources` read (its columns already mapped onto the
format's names) and hands :mod:`flux_core.data.normalise` a :class:`Shape`: which layout
the rows are in, and what each column it reads holds (``text`` or ``chat``). Detection
reads the Arrow schema, not the rows, except for a column of mixed values, which is read
row by row to name the first row that differs.

Detection runs twice. First ``LAYOUTS``, the row layouts practitioners' tools write, which
:func:`flux_core.data.normalise.normalise_layout` turns into the columns every format knows,
for every format (its messages were already brought to ``{"role", "content"}`` by
:mod:`flux_core.data.messages`):

- ShareGPT (FastChat, LLaMA-Factory, Axolotl): ``conversations`` (+ ``system``, ``tools``)
  -> ``messages``;
- Alpaca (Stanford Alpaca, LLaMA-Factory): ``instruction`` + ``input`` (+ ``system``,
  ``history``) -> ``prompt``; ``output`` -> ``completion`` for formats that train on one;
  ``chosen``/``rejected`` stay (preference pairs).

Then ``SHAPES``, each format's own detectors, tried in order; the first that matches wins:

- preferences: reply messages (``chosen``/``rejected`` one message each, the prompt in
  ``messages``: LLaMA-Factory's ShareGPT pairs), implicit prompt (no ``prompt``; Anthropic
  HH-RLHF, trl-lib/ultrafeedback_binarized), a string prompt with full conversations
  (HuggingFaceH4/ultrafeedback_binarized), explicit pairs (canonical);
- prompts: a ``messages`` conversation, a ``prompt`` (canonical);
- any other (a plugin's) format: ``messages`` where it trains on prompt + completion and
  takes ``messages`` as an alternative key (the last assistant turn is the completion:
  KTO's conversations), or its text keys, all strings or all chat (canonical).

A row that two layouts read differently (``messages`` and ``conversations``, ``prompt`` and
``instruction``) is an error naming it. A new shape is one detector here and one normaliser
in ``normalise.NORMALISERS`` under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from flux_core.data.arrow import arrow_batches, first_true, one_array
from flux_core.data.formats import BATCH_ROWS, CHAT, TEXT, DataFormat, column_kind, describe_kind, value_kind
from flux_core.errors import DataError

# Shape names: what a detector found, and the key of its normaliser.
IMPLICIT_PROMPT = "implicit prompt"
PROMPT_STRING_CONVERSATIONS = "string prompt with conversations"
EXPLICIT_PAIRS = "explicit pairs"
MESSAGES = "messages"
PROMPT = "prompt"
TEXT_KEYS = "text keys"
SHAREGPT = "sharegpt"
ALPACA = "alpaca"
REPLY_MESSAGES = "reply messages"
MESSAGES_COMPLETION = "messages, last assistant turn as completion"

COMPLETIONS = ("chosen", "rejected")
# The columns practitioners' layouts are read from (``data.columns`` can map onto them too).
LAYOUT_COLUMNS = ("conversations", "system", "instruction", "input", "output", "history")
# Completes "each example needs ..." in errors; other formats need their text and label keys.
NEEDS = {"prompts": "prompt (or messages)"}
# A column that says which layout a row is in, and what it says: two in one row are two readings of it.
READINGS = {
    "messages": "a chat conversation",
    "conversations": "a ShareGPT conversation",
    "instruction": "an Alpaca instruction",
    "prompt": "a prompt",
}


@dataclass(frozen=True)
class Shape:
    """What detection found: the rows' layout and what the columns read in it hold."""

    name: str
    kinds: dict[str, str]  # column -> text or chat: the columns its normaliser and the checks read
    needs: str  # completes "each example needs ..." in errors
    canonical: bool = True  # the format's own columns already: nothing to normalise
    allow_empty: tuple[str, ...] = ()  # columns where an empty string is a warning, not an error
    found: Mapping[str, Any] = field(default_factory=dict)  # what else its normaliser needs to know


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


def detect_layout(dataset: Any, fmt: DataFormat, where: Any) -> Shape | None:
    """The practitioners' layout ``dataset`` is in (ShareGPT, Alpaca), or None for the format's own columns."""
    columns = Columns(dataset, where, needs_of(fmt))
    return next((shape for detector in LAYOUTS if (shape := detector(columns, fmt)) is not None), None)


def needs_of(fmt: DataFormat) -> str:
    return NEEDS.get(fmt.name) or ", ".join(fmt.text_keys + fmt.label_keys)


def gives_preference_pairs(dataset: Any, fmt: DataFormat) -> bool:
    """Whether ``dataset`` holds preference pairs instead of ``fmt``'s keys, for a format that converts them."""
    own = set(fmt.text_keys + fmt.label_keys) - {"prompt"}
    columns = set(dataset.column_names)
    return bool(fmt.from_preferences) and set(COMPLETIONS) <= columns and not own & columns


# ----------------------------------------------------------------- practitioners' layouts


def sharegpt(columns: Columns, fmt: DataFormat) -> Shape | None:
    """ShareGPT: a ``conversations`` message list, an optional ``system`` string."""
    if "conversations" not in columns:
        return None
    refuse_two_readings(columns, "conversations", ("messages", "instruction", "prompt"))
    if columns.kinds(("conversations",))["conversations"] != CHAT:
        raise DataError(f"{columns.where(0)}: 'conversations' must be a list of chat messages")
    _require_strings(columns, ("system",))
    return Shape(SHAREGPT, {"conversations": CHAT}, "conversations", canonical=False)


def alpaca(columns: Columns, fmt: DataFormat) -> Shape | None:
    """Alpaca: ``instruction``, optional ``input``, ``system`` and ``history``; ``output`` for formats
    trained on a completion, ``chosen`` and ``rejected`` for preference pairs."""
    if "instruction" not in columns:
        return None
    refuse_two_readings(columns, "instruction", ("prompt", "messages", "conversations"))
    completion = "completion" in fmt.text_keys
    pairs = set(COMPLETIONS) <= set(fmt.text_keys)
    read = ("instruction", "output") if completion else ("instruction", *COMPLETIONS) if pairs else ("instruction",)
    needs = "Alpaca's " + (" and ".join((", ".join(read[:-1]), read[-1])) if len(read) > 1 else read[0])
    columns = Columns(columns.dataset, columns.where, needs)
    kinds = columns.kinds(read)
    for column, kind in kinds.items():
        if kind != TEXT:
            raise DataError(f"{columns.where(0)}: '{column}' must be a string (Alpaca data)")
    _require_strings(columns, ("input", "system"))
    chat = _any_set(columns, "system") or _any_set(columns, "history")
    found = {"chat": chat, "completion": completion, "pairs": pairs}
    return Shape(ALPACA, kinds, columns.needs, canonical=False, allow_empty=COMPLETIONS, found=found)


def refuse_two_readings(columns: Columns, column: str, others: tuple[str, ...]) -> None:
    """Raise, naming the row, when a row holds ``column`` and one of ``others`` (two layouts at once)."""
    import pyarrow.compute as pc

    for other in others:
        if other not in columns:
            continue
        first_theirs = None
        for offset, batch in arrow_batches(columns.dataset, [column, other]):
            mine, theirs = pc.is_valid(batch.column(column)), pc.is_valid(batch.column(other))
            both = first_true(one_array(pc.and_(mine, theirs)))
            if both is not None:
                raise DataError(
                    f"{columns.where(offset + both)}: '{column}' ({READINGS[column]}) and '{other}' "
                    f"({READINGS[other]}) are two readings of this example; keep one of the two columns "
                    "(or map one away with data.columns)"
                )
            if first_theirs is None and (row := first_true(one_array(theirs))) is not None:
                first_theirs = offset + row
        if first_theirs is not None:
            raise DataError(
                f"{columns.where(first_theirs)}: '{other}' ({READINGS[other]}) here but '{column}' "
                f"({READINGS[column]}) in other rows; use one layout per file"
            )


def _require_strings(columns: Columns, optional: tuple[str, ...]) -> None:
    """Optional columns hold strings where they are set."""
    import pyarrow as pa

    for column in optional:
        if column in columns:
            arrow_type = columns.dataset.data.schema.field(column).type
            if not (pa.types.is_null(arrow_type) or column_kind(columns.dataset, column) == TEXT):
                raise DataError(f"{columns.where(0)}: '{column}' must be a string")


def _any_set(columns: Columns, column: str) -> bool:
    """Whether any row holds a non-empty ``column`` (a string or a list)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in columns or pa.types.is_null(columns.dataset.data.schema.field(column).type):
        return False
    for _, batch in arrow_batches(columns.dataset, [column]):
        values = batch.column(column)
        length = pc.utf8_length if pa.types.is_string(values.type) else pc.list_value_length
        if pc.any(pc.greater(length(values), 0)).as_py():
            return True
    return False


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


def reply_messages(columns: Columns, fmt: DataFormat) -> Shape | None:
    """``chosen`` and ``rejected`` one message each (LLaMA-Factory), the prompt a ``messages`` conversation
    (ShareGPT, read as its layout) or ``prompt``."""
    if not all(column in columns and holds_single_messages(columns.dataset, column) for column in COMPLETIONS):
        return None
    if "messages" in columns:
        refuse_two_readings(columns, "messages", ("prompt",))
    source = "messages" if "messages" in columns else "prompt"
    return Shape(REPLY_MESSAGES, columns.kinds((source,)), columns.needs, canonical=False)


def holds_single_messages(dataset: Any, column: str) -> bool:
    """Whether ``column`` holds one message per row (an Arrow struct, or JSON objects), not a message list."""
    import pyarrow as pa

    arrow_type = dataset.data.schema.field(column).type
    if pa.types.is_struct(arrow_type):
        return True
    if not isinstance(arrow_type, pa.JsonType):
        return False
    for batch in dataset.select_columns([column]).iter(batch_size=BATCH_ROWS):
        first = next((value for value in batch[column] if value is not None), None)
        if first is not None:
            return isinstance(first, dict)
    return False


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


def messages_completion(columns: Columns, fmt: DataFormat) -> Shape | None:
    """A ``messages`` conversation for a format trained on prompt + completion (KTO): the last assistant
    turn is the completion, the turns before it the prompt."""
    if not {"prompt", "completion"} <= set(fmt.text_keys) or "messages" not in fmt.alternative_keys:
        return None
    if "messages" not in columns:
        return None
    if "prompt" in columns or "completion" in columns:
        return None
    if columns.kinds(("messages",))["messages"] != CHAT:
        raise DataError(f"{columns.where(0)}: 'messages' must be a list of chat messages")
    return Shape(MESSAGES_COMPLETION, {"messages": CHAT}, columns.needs, canonical=False)


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
LAYOUTS: tuple[Detector, ...] = (sharegpt, alpaca)
SHAPES: dict[str, tuple[Detector, ...]] = {
    "preferences": (reply_messages, implicit_prompt, prompt_string_with_conversations, explicit_pairs),
    "prompts": (messages_conversation, prompt),
}
PLUGIN_SHAPES: tuple[Detector, ...] = (messages_completion, text_keys)


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
