"""The data formats algorithms train on, and the two kinds of value a text column holds.

Not a stage: the words every stage of the data pipeline (:mod:`flux_core.data.load`)
shares. A format names the columns an algorithm trains on; core defines ``preferences``
and ``prompts``, a plugin its own as ``Algorithm.data_format_spec``. The registry
(:mod:`flux_core.registry`) keeps them all, next to algorithms, losses and rewards, so
this module imports nothing from Flux but its errors: owning formats must not import
the pipeline.

A text column holds ``text`` (strings) or ``chat`` (chat message lists,
``[{"role", "content"}]``), the same kind in every row. Chat messages are Arrow structs,
or JSON values (``datasets.Json``) in conversations with tool calls, where an assistant
message holds ``tool_calls`` instead of ``content`` (see :mod:`flux_core.data.messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from flux_core.errors import DataError

TEXT, CHAT = "text", "chat"
MESSAGE_EXAMPLE = '{"role": "user", "content": "..."}'
BATCH_ROWS = 50_000  # rows a stage reads at a time: memory stays one batch, whatever the dataset's size
# Columns TRL's trainers pass to the chat template besides the conversation (tool schemas, template options).
TEMPLATE_COLUMNS = ("tools", "chat_template_kwargs")


@dataclass(frozen=True)
class DataFormat:
    """The columns one data format trains on; other columns are kept as extra columns."""

    name: str
    text_keys: tuple[str, ...]
    description: str
    # Columns that can stand in for the text keys (normalised into them), for column mapping.
    alternative_keys: tuple[str, ...] = ()
    # Boolean columns every row needs (a plugin's format, e.g. KTO's ``label``).
    label_keys: tuple[str, ...] = ()
    # "module:attribute" of ``fn(pairs, num_proc) -> dataset``: preference pairs (checked and normalised
    # as the "preferences" format) given instead of this format's keys are converted by it.
    from_preferences: str | None = None
    # "module:attribute" of ``fn(dataset, where, num_proc) -> dataset`` for a format with several shapes
    # (e.g. SFT's messages, prompt + completion, or text): it detects the shape, checks the rows with
    # ``flux_core.text_kind`` and ``flux_core.check_rows`` and normalises them, instead of core's stages.
    normalize: str | None = None
    # Columns besides the text, alternative and label keys that reach training; the load warns, in one line, about
    # any other column. None: every column does (e.g. prompts: reward functions get them by name).
    also_used: tuple[str, ...] | None = TEMPLATE_COLUMNS


BUILTIN_DATA_FORMATS = {
    "preferences": DataFormat(
        "preferences",
        ("prompt", "chosen", "rejected"),
        "preference pairs: prompt, chosen, rejected (strings or chat message lists; "
        "prompt may be implicit in chosen and rejected)",
    ),
    "prompts": DataFormat(
        "prompts",
        ("prompt",),
        "prompts (string or chat message list, or a messages conversation); extra keys reach reward functions",
        alternative_keys=("messages",),
        also_used=None,
    ),
}


def column_kind(dataset: Any, column: str) -> str | None:
    """``text`` or ``chat`` when Arrow holds ``column`` as one of them, else None (from the schema alone)."""
    import pyarrow as pa

    arrow_type = dataset.data.schema.field(column).type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and (
        pa.types.is_struct(arrow_type.value_type) or isinstance(arrow_type.value_type, pa.JsonType)
    ):
        return CHAT
    return None


def is_message(value: Any) -> bool:
    """Whether ``value`` is a chat message: a string ``role`` and a string ``content``, or an assistant
    message's ``tool_calls`` list in place of the content."""
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        return False
    content = value.get("content")
    return isinstance(content, str) or (isinstance(value.get("tool_calls"), list) and content is None)


def value_kind(value: Any, column: str, allow_empty: bool, where: Callable[[], str]) -> str:
    """``text`` or ``chat`` for one value; raise naming ``where()`` when it is neither."""
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise DataError(f"{where()}: '{column}' is empty")
        return TEXT
    if isinstance(value, list) and value:
        for index, message in enumerate(value):
            if not is_message(message):
                raise DataError(f"{where()}: '{column}'[{index}] must be a message like {MESSAGE_EXAMPLE}")
        return CHAT
    described = "an empty list" if isinstance(value, list) else type(value).__name__
    raise DataError(f"{where()}: '{column}' must be a string or a list of chat messages, not {described}")


def describe_kind(kind: str) -> str:
    """``text`` -> "a string", ``chat`` -> "a chat message list", other type names -> "a NAME"."""
    return {TEXT: "a string", CHAT: "a chat message list", "number": "a number"}.get(kind, f"a {kind}")
