"""Chat messages as practitioners write them -> the ``{"role", "content"}`` messages chat templates take.

Runs in :func:`flux_core.data.load.load_data` right after reading, before shapes are detected, on
the columns that may hold conversations or single messages (the format's text and alternative
keys, ``messages`` and ShareGPT's ``conversations``). A column already in that form costs one
vectorised scan of its role names. Everything else is one batched ``Dataset.map``:

- message keys: ShareGPT's ``from``/``value`` (FastChat, LLaMA-Factory, Axolotl), or the keys
  ``data.message_keys`` names -> ``role``/``content``;
- role names: ``human`` -> ``user``; ``gpt``, ``model``, ``bot`` -> ``assistant``;
  ``observation`` -> ``tool``; ``data.roles`` adds more. An unknown role is an error naming
  the row (``function`` too: OpenAI's old function results, but LLaMA-Factory's calls);
- content parts (``[{"type": "text", "text": ...}]``, or ``"value"`` instead of ``"text"``: the
  multimodal-ready form) -> one string, the text parts joined as chat templates render them
  (no separator). Any other part is an error: Flux trains text models;
- tool calls: a ``function_call`` turn whose value is ``{"name": ..., "arguments": ...}`` JSON (or
  a list of them) -> an assistant message with ``tool_calls`` in the form chat templates render,
  ``[{"type": "function", "function": {"name", "arguments"}}]``; messages already in that form
  (OpenAI's) keep it, their JSON-string ``arguments`` parsed into the object templates take;
- a ``tools`` column (tool schemas: a JSON string, or a list) -> a JSON string, which TRL's
  trainers parse and pass to the chat template; an empty string -> no tools.

A conversation with tool calls is stored as JSON messages (``datasets.Json``), each exactly as
built: as Arrow structs every message would get every other message's keys (``tool_calls: None``
on a user turn, ``content: None`` on a tool call), which templates that test ``'tool_calls' in
message`` (Llama 3.1) misread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from flux_core.data.arrow import arrow_batches, first_true, one_array
from flux_core.data.formats import MESSAGE_EXAMPLE, DataFormat
from flux_core.data.normalise import batched_map
from flux_core.errors import DataError

# Role -> the names datasets use for it. ``tool_call`` turns become assistant messages with tool calls.
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "system": ("system",),
    "user": ("user", "human"),
    "assistant": ("assistant", "gpt", "model", "bot"),
    "tool_call": ("function_call",),
    "tool": ("tool", "observation"),
}
# Message key -> the names it goes by, the canonical one first.
KEY_NAMES = {"role": ("role", "from"), "content": ("content", "value")}
CONVERSATION_COLUMNS = ("messages", "conversations")
TOOL_CALL_EXAMPLE = '{"name": "...", "arguments": {...}}'


@dataclass(frozen=True)
class MessageStyle:
    """How a dataset writes its messages: ``data.message_keys`` and ``data.roles`` on top of the defaults."""

    keys: Mapping[str, str]  # role / content -> the dataset's own key, where configured
    role_of: Mapping[str, str]  # a role name as written -> system, user, assistant, tool_call or tool
    what: str = "data"  # the config key errors name

    @classmethod
    def of(
        cls, message_keys: Mapping[str, str] | None, roles: Mapping[str, list[str]] | None, what: str = "data"
    ) -> MessageStyle:
        role_of = {name: role for role, names in ROLE_NAMES.items() for name in names}
        for role, names in (roles or {}).items():
            role_of.update(dict.fromkeys(names, role))
        return cls(dict(message_keys or {}), role_of, what)

    def key(self, message: Mapping[str, Any], name: str) -> str:
        """The key of ``message`` (a message, or a message struct's fields) that holds its ``name`` (role or
        content): the configured one, else role/content, else ShareGPT's from/value; one that is set first
        (Arrow gives a column's messages every key any of them has)."""
        candidates = [key for key in (self.keys.get(name), *KEY_NAMES[name]) if key is not None and key in message]
        set_ones = [key for key in candidates if message[key] is not None]
        return (set_ones or candidates or [self.keys.get(name) or name])[0]


@dataclass(frozen=True)
class MessageColumn:
    """A column whose messages need converting, and how its converted values are stored."""

    name: str
    single: bool  # one message per row (LLaMA-Factory's chosen/rejected), not a conversation
    as_json: bool  # stored as JSON messages (it holds tool calls)
    # (role key, content key) where renaming keys and roles is all it takes (string contents, no tool calls):
    # converted in Arrow, without reading messages into Python
    renames: tuple[str, str] | None = None


def to_chat_messages(dataset: Any, fmt: DataFormat, style: MessageStyle, where: Any, num_proc: int | None) -> Any:
    """``dataset`` with every message in the columns ``fmt`` may read as ``{"role", "content"}`` (or tool calls),
    and its ``tools`` column as JSON strings; columns already in that form are left as they are."""
    candidates = dict.fromkeys(fmt.text_keys + fmt.alternative_keys + CONVERSATION_COLUMNS)
    plans = [
        plan for column in candidates if column in dataset.column_names and (plan := _plan(dataset, column, style))
    ]
    if plans:
        features = dataset.features.copy()
        for plan in plans:
            features[plan.name] = _converted_feature(dataset.features[plan.name], plan, style)
        fn_kwargs = {"plans": plans, "style": style, "where": where}
        if all(plan.renames for plan in plans):  # ShareGPT's usual case: keys and role names only
            arrow = batched_map(
                dataset.with_format("arrow"), _rename_batch, fn_kwargs, features, num_proc, "Renaming chat messages"
            )
            dataset = arrow.with_format(None)
        else:
            dataset = batched_map(dataset, _convert_batch, fn_kwargs, features, num_proc, "Converting chat messages")
    if "tools" in dataset.column_names:
        from datasets import Value

        features = dataset.features.copy()
        features["tools"] = Value("string")
        dataset = batched_map(dataset, _tools_batch, {"where": where}, features, num_proc, "Reading tool schemas")
    return dataset


# ----------------------------------------------------------------- which columns to convert


def _plan(dataset: Any, column: str, style: MessageStyle) -> MessageColumn | None:
    """How ``column`` must be converted, or None when it holds no messages or holds them canonically."""
    import pyarrow as pa

    arrow_type = dataset.data.schema.field(column).type
    single = pa.types.is_struct(arrow_type)
    if not single and not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return None
    message_type = arrow_type if single else arrow_type.value_type
    if isinstance(message_type, pa.JsonType):  # messages of mixed layouts: read each as it is
        return MessageColumn(column, single=False, as_json=True)
    if not pa.types.is_struct(message_type):
        return None
    fields = {
        message_type.field(index).name: message_type.field(index).type for index in range(message_type.num_fields)
    }
    role_key, content_key = style.key(fields, "role"), style.key(fields, "content")
    if role_key not in fields or content_key not in fields:
        _refuse_configured_keys(style, column, fields)
        return None  # not messages: the checks report the column
    names = _role_names(dataset, column, role_key, single) if pa.types.is_string(fields[role_key]) else None
    roles = {style.role_of.get(name) for name in names} if names is not None else {None}
    as_json = "tool_call" in roles or "tool_calls" in fields
    plain = (
        pa.types.is_string(fields[content_key])
        and names is not None
        and None not in names
        and not as_json
        and all(len({style.keys.get(name), *KEY_NAMES[name]} & set(fields)) == 1 for name in KEY_NAMES)
    )
    if plain and (role_key, content_key) == ("role", "content") and all(style.role_of.get(n) == n for n in names):
        return None  # canonical already
    return MessageColumn(column, single, as_json, renames=(role_key, content_key) if plain else None)


def _refuse_configured_keys(style: MessageStyle, column: str, fields: Mapping[str, Any]) -> None:
    for name, key in style.keys.items():
        if key not in fields and not any(default in fields for default in KEY_NAMES[name]):
            raise DataError(
                f"{style.what}.message_keys.{name}: the messages in '{column}' have no key '{key}' "
                f"(keys: {', '.join(fields)})"
            )


def _role_names(dataset: Any, column: str, role_key: str, single: bool) -> set[str | None]:
    """Every role name ``column``'s messages use, None among them where a message has none (one vectorised pass,
    a batch at a time)."""
    import pyarrow.compute as pc

    names: set[str | None] = set()
    for _, batch in arrow_batches(dataset, [column]):
        values = one_array(batch.column(column))
        messages = values if single else pc.list_flatten(values)
        names.update(pc.unique(messages.field(role_key)).to_pylist())
    return names


def _converted_feature(feature: Any, plan: MessageColumn, style: MessageStyle) -> Any:
    """The ``datasets`` feature of a converted column: JSON messages, or role/content structs (other keys kept)."""
    from datasets import Json, List, Value

    if plan.as_json:
        return Json() if plan.single else List(Json())
    message = feature if plan.single else feature.feature
    keys = {*KEY_NAMES["role"], *KEY_NAMES["content"], *style.keys.values()}
    converted = {"role": Value("string"), "content": Value("string")}
    converted |= {key: value for key, value in message.items() if key not in keys}
    return converted if plan.single else List(converted)


# ----------------------------------------------------------------- converting messages


def _convert_batch(batch: dict, indices: list[int], plans: list[MessageColumn], style: MessageStyle, where: Any):
    converted = {}
    for plan in plans:
        values = []
        for index, value in zip(indices, batch[plan.name]):
            if value is None:
                values.append(None)  # a missing value: the shape's checks name it
            elif plan.single:
                values.append(to_chat_message(value, f"'{plan.name}'", style, lambda index=index: where(index)))
            else:
                values.append(
                    [
                        to_chat_message(message, f"'{plan.name}'[{position}]", style, lambda index=index: where(index))
                        for position, message in enumerate(value)
                    ]
                )
        converted[plan.name] = values
    return converted


def _rename_batch(table: Any, indices: list[int], plans: list[MessageColumn], style: MessageStyle, where: Any):
    """Batched map over Arrow tables: message keys and role names renamed, a column at a time, in Arrow."""
    for plan in plans:
        position = table.column_names.index(plan.name)
        table = table.set_column(position, plan.name, _renamed(table.column(plan.name), plan, style, indices, where))
    return table


def _renamed(values: Any, plan: MessageColumn, style: MessageStyle, indices: list[int], where: Any) -> Any:
    """``values`` (a list or struct column) with ``role``/``content`` keys and canonical role names."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = one_array(values)
    messages = values if plan.single else pc.list_flatten(values)
    role_key, content_key = plan.renames
    roles = messages.field(role_key)
    names = [name for name in pc.unique(roles).to_pylist() if name is not None]
    for name in names:
        if style.role_of.get(name) is None:  # name the first row that has it (the error path only)
            flat = first_true(pc.equal(roles, name))
            row = flat if plan.single else pc.list_parent_indices(values)[flat].as_py()
            position = "" if plan.single else f"[{flat - (values.offsets[row].as_py() - values.offsets[0].as_py())}]"
            to_chat_message({"role": name}, f"'{plan.name}'{position}", style, lambda: where(indices[row]))
    mapped = pa.array([style.role_of[name] for name in names], pa.string()).take(pc.index_in(roles, pa.array(names)))
    replaced = {role_key, content_key, *KEY_NAMES["role"], *KEY_NAMES["content"], *style.keys.values()}
    kept = [name for name in _field_names(messages.type) if name not in replaced]
    fields = [mapped, messages.field(content_key), *(messages.field(name) for name in kept)]
    renamed = pa.StructArray.from_arrays(fields, names=["role", "content", *kept], mask=messages.is_null())
    if plan.single:
        return renamed
    offsets = pc.subtract(values.offsets, values.offsets[0])
    return type(values).from_arrays(offsets, renamed, mask=values.is_null())


def _field_names(struct_type: Any) -> list[str]:
    return [struct_type.field(index).name for index in range(struct_type.num_fields)]


def to_chat_message(message: Any, label: str, style: MessageStyle, where: Any) -> dict:
    """One message as chat templates take it. ``label`` names it in errors (``'messages'[2]``),
    ``where()`` its row."""
    if not isinstance(message, dict):
        raise DataError(f"{where()}: {label} must be a message like {MESSAGE_EXAMPLE}")
    role_key, content_key = style.key(message, "role"), style.key(message, "content")
    name, content = message.get(role_key), message.get(content_key)
    if name is None:
        raise DataError(f"{where()}: {label} must be a message like {MESSAGE_EXAMPLE}")
    role = style.role_of.get(name) if isinstance(name, str) else None
    if role is None:
        example = name if isinstance(name, str) else "NAME"
        raise DataError(
            f"{where()}: {label} has role {name!r}, which Flux does not know; map it onto one of "
            f"system, user, assistant, tool_call, tool with {style.what}.roles (e.g. roles: {{user: [{example}]}})"
        )
    others = {  # other keys (a tool message's name, a per-turn weight): kept, less the None Arrow filled in
        key: _without_none(value)
        for key, value in message.items()
        if key not in (*KEY_NAMES["role"], *KEY_NAMES["content"], *style.keys.values()) and value is not None
    }
    if role == "tool_call":
        return {"role": "assistant", "tool_calls": _tool_calls(content, label, where)} | others
    if others.get("tool_calls"):  # already a tool call (OpenAI's form)
        others["tool_calls"] = [
            call | _tool_calls(call.get("function", call), label, where)[0] for call in others["tool_calls"]
        ]
        return {"role": role} | ({"content": _text(content, label, where)} if content is not None else {}) | others
    return {"role": role, "content": _text(content, label, where)} | others


def _text(content: Any, label: str, where: Any) -> str:
    """A message's content as one string: text parts are joined."""
    if isinstance(content, str):
        return content
    if content is None:
        raise DataError(f"{where()}: {label} must be a message like {MESSAGE_EXAMPLE}")
    if not isinstance(content, list):
        raise DataError(f"{where()}: {label}'s content must be a string or a list of text parts, not {_type(content)}")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else _type(part)
        text = _first_set(part, ("text", "value")) if isinstance(part, dict) else None
        if kind != "text" or not isinstance(text, str):
            raise DataError(
                f"{where()}: {label} content part {index} is {kind!r}, not text; Flux trains text models: "
                'keep only parts like {"type": "text", "text": "..."}'
            )
        texts.append(text)
    return "".join(texts)


def _tool_calls(value: Any, label: str, where: Any) -> list[dict]:
    """A ``function_call`` turn's value (``{"name", "arguments"}`` JSON, or a list of them) as ``tool_calls``."""
    try:
        calls = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        calls = None
    calls = calls if isinstance(calls, list) and calls else [calls]  # a turn may hold several (parallel) calls
    tool_calls = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            raise DataError(f"{where()}: {label} is a tool call whose value is not JSON like {TOOL_CALL_EXAMPLE}")
        arguments = call["arguments"]
        if isinstance(arguments, str):  # OpenAI writes the arguments as a JSON string; chat templates take the object
            arguments = _json_or_text(arguments)
        tool_calls.append({"type": "function", "function": {"name": call["name"], "arguments": arguments}})
    return tool_calls


# ----------------------------------------------------------------- tool schemas


def _tools_batch(batch: dict, indices: list[int], where: Any) -> dict:
    """Batched map: each row's ``tools`` as a JSON string of a list of tool schemas (None: no tools)."""
    tools = []
    for index, value in zip(indices, batch["tools"]):
        if isinstance(value, str):
            if not value.strip():
                tools.append(None)
                continue
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{where(index)}: 'tools' is not valid JSON: {error.msg} (column {error.colno})"
                ) from None
        elif value is not None:
            value = _without_none(value)  # Arrow gave each schema the keys of every other one, as None
        if value is None:
            tools.append(None)
            continue
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
            raise DataError(f"{where(index)}: 'tools' must be a list of tool schemas (JSON objects)")
        tools.append(json.dumps(value, ensure_ascii=False))
    return {"tools": tools}


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


# ----------------------------------------------------------------- helpers


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _first_set(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[key] for key in keys if mapping.get(key) is not None), None)


def _type(value: Any) -> str:
    return type(value).__name__
