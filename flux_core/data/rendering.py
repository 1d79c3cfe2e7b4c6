"""Whether a model's chat template renders what a dataset's conversations hold: tool calls and tool schemas.

Not a stage of loading (that needs no model): TRL-based runners call
:func:`check_template_renders` once the tokenizer is loaded and before TRL tokenizes, so a
template that cannot render a tool call is one line naming the row and the model instead
of a Jinja traceback in the middle of tokenizing, and a ``tools`` column the template
never reads is a warning instead of a silent drop.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from flux_core.data.arrow import arrow_batches, first_true, one_array
from flux_core.errors import FluxError

# Column groups TRL renders as one conversation, in the order its trainers look for them.
CONVERSATIONS = (("prompt", "completion"), ("prompt", "chosen"), ("messages",))


def check_template_renders(tokenizer: Any, dataset: Any, model_path: str) -> None:
    """Render the first conversation of ``dataset`` holding a tool call (else its first row) with ``tokenizer``'s
    chat template, as TRL will; raise one line when it cannot, warn when it ignores the row's ``tools``."""
    columns = next((group for group in CONVERSATIONS if set(group) <= set(dataset.column_names)), None)
    if columns is None or getattr(tokenizer, "chat_template", None) is None:
        return
    row = _first_tool_call(dataset, columns)
    example = dataset[row if row is not None else 0]
    if not all(isinstance(example[column], list) for column in columns):
        return  # strings: rendered without the chat template
    conversation = [message for column in columns for message in example[column]]
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    where = f"row {(row or 0) + 1}"
    try:
        with_tools = tokenizer.apply_chat_template(conversation, tools=tools, tokenize=False)
    except Exception as error:  # Jinja raises its own errors, and TypeError on None
        what = "tool calls" if row is not None else "this data"
        raise FluxError(
            f"the chat template of '{model_path}' cannot render {what} ({where} of the data: "
            f"{' '.join(str(error).split()) or type(error).__name__}); use a model whose template supports them, "
            "or set chat_template"
        ) from None
    if tools and with_tools == tokenizer.apply_chat_template(conversation, tokenize=False):
        warnings.warn(
            f"the chat template of '{model_path}' does not render tool schemas: the 'tools' column is ignored "
            f"({where} of the data)",
            UserWarning,
            stacklevel=2,
        )


def _first_tool_call(dataset: Any, columns: tuple[str, ...]) -> int | None:
    """The first row whose conversation holds a tool call (only JSON messages can: see ``flux_core.data.messages``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in columns:
        arrow_type = dataset.data.schema.field(column).type
        if not (pa.types.is_list(arrow_type) and isinstance(arrow_type.value_type, pa.JsonType)):
            continue
        for offset, batch in arrow_batches(dataset, [column]):
            values = one_array(batch.column(column))
            calls = pc.match_substring(pc.list_flatten(values).storage, '"tool_calls"')
            flat = first_true(calls)
            if flat is not None:
                return offset + pc.list_parent_indices(values)[flat].as_py()
    return None
