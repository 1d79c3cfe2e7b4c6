"""Stage 3 of loading data: bring a detected shape to its format's canonical columns.

Gets the dataset and the :class:`~flux_core.data.shapes.Shape` that
:mod:`flux_core.data.shapes` detected, its rows already checked (a normaliser reads only
well-formed values), and hands :mod:`flux_core.data.checks` the dataset in the format's
own columns with the canonical shape: what each of those columns now holds. A canonical
shape passes through untouched. Practitioners' layouts come first
(:func:`normalise_layout`), then the format's own shape. ``NORMALISERS`` holds one
normaliser per shape name; each drops the columns it consumed:

- ShareGPT: ``conversations`` -> ``messages``, a non-empty ``system`` column as its first
  turn (a system turn already there must say the same);
- Alpaca: the prompt is ``instruction``, then ``input`` as its own paragraph (after a blank
  line) when there is one; a chat conversation (``system`` turn, ``history`` turns, then that
  user turn) when any row has a ``system`` or a ``history``, and then ``output``, ``chosen``
  and ``rejected`` become assistant turns. ``output`` becomes ``completion`` for formats
  trained on one, and stays as it is otherwise (prompts: for reward functions);
- reply messages: ``chosen``/``rejected`` become one-message lists; the prompt is
  ``messages``, or ``prompt`` (a string becomes a user turn);
- ``messages`` for prompt + completion formats (KTO): the last assistant turn is the
  completion, the turns before it the prompt;

- implicit prompt: the longest shared prefix of ``chosen`` and ``rejected`` becomes the
  prompt, split at a turn boundary for conversations (as TRL's ``extract_prompt``) and
  after the last assistant marker (``Assistant:``, ...) for strings, so a reply that
  starts alike in both stays in the completion;
- a string prompt with conversations: the shared turns that repeat the prompt leave
  ``chosen``/``rejected`` and become the prompt;
- ``messages`` for prompts: the prompt is every turn before the last assistant turn, or
  all turns when there is none (``messages`` is kept, for rewards).

Each is a batched ``Dataset.map`` (cached by ``datasets``, ``num_proc`` workers).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, NamedTuple

from flux_core.data.checks import check_rows
from flux_core.data.formats import CHAT, TEXT, DataFormat, column_kind
from flux_core.data.shapes import (
    ALPACA,
    IMPLICIT_PROMPT,
    MESSAGES,
    MESSAGES_COMPLETION,
    PROMPT_STRING_CONVERSATIONS,
    REPLY_MESSAGES,
    SHAREGPT,
    Shape,
    detect_layout,
)
from flux_core.data.sources import PROGRESS_ROWS, quiet_datasets
from flux_core.errors import DataError

# Where an assistant reply starts in a flattened conversation, most specific first.
ASSISTANT_MARKERS = ("Assistant:", "<|im_start|>assistant\n", "[/INST]", "### Response:")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
COMPLETIONS_OF_PAIRS = PAIR_COLUMNS[1:]


class Normaliser(NamedTuple):
    """``function(dataset, shape, where, num_proc) -> dataset`` and the canonical columns it fills."""

    function: Callable[[Any, Shape, Any, int | None], Any]
    produces: tuple[str, ...]


def normalise(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> tuple[Any, Shape]:
    """``dataset`` in its format's canonical columns, and the shape of those columns."""
    if shape.canonical:
        return dataset, shape
    normaliser = NORMALISERS[shape.name]
    dataset = normaliser.function(dataset, shape, where, num_proc)
    kinds = {column: column_kind(dataset, column) for column in normaliser.produces if column in dataset.column_names}
    return dataset, replace(shape, kinds=kinds, canonical=True)


def normalise_layout(dataset: Any, fmt: DataFormat, where: Any, num_proc: int | None) -> tuple[Any, str | None]:
    """``dataset`` with a practitioners' layout (ShareGPT, Alpaca) brought to the columns ``fmt`` knows, and the
    layout's name (None: already in them). The rows it reads are checked first."""
    layout = detect_layout(dataset, fmt, where)
    if layout is None:
        return dataset, None
    check_rows(dataset, layout.kinds, where, layout.needs, allow_empty=layout.allow_empty)
    return normalise(dataset, layout, where, num_proc)[0], layout.name


# ----------------------------------------------------------------- practitioners' layouts


def _sharegpt_batch(batch: dict, indices: list[int], where: Any) -> dict:
    """Batched map: ShareGPT's ``conversations`` (+ ``system``) -> ``messages``."""
    systems = batch.get("system") or [None] * len(indices)
    messages = []
    for index, conversation, system in zip(indices, batch["conversations"], systems):
        if system and system.strip():
            if conversation[0]["role"] != "system":
                conversation = [{"role": "system", "content": system}, *conversation]
            elif conversation[0]["content"] != system:
                raise DataError(
                    f"{where(index)}: the 'system' column and the system turn of 'conversations' differ; keep one"
                )
        messages.append(conversation)
    return {"messages": messages}


def sharegpt_messages(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """ShareGPT -> a ``messages`` conversation (its messages are already role/content, see
    :mod:`flux_core.data.messages`)."""
    consumed = [column for column in ("conversations", "system") if column in dataset.column_names]
    features = _features(dataset, consumed, {"messages": dataset.features["conversations"]})
    desc = "Reading ShareGPT conversations"
    return batched_map(dataset, _sharegpt_batch, {"where": where}, features, num_proc, desc, remove_columns=consumed)


def _alpaca_batch(batch: dict, indices: list[int], chat: bool, completion: bool, where: Any) -> dict:
    """Batched map: Alpaca's instruction, input, system and history -> ``prompt``; replies as the prompt's kind."""
    rows = len(indices)
    inputs, systems, histories = (batch.get(column) or [None] * rows for column in ("input", "system", "history"))
    prompts = []
    for index, instruction, given, system, history in zip(indices, batch["instruction"], inputs, systems, histories):
        request = f"{instruction}\n\n{given}" if given and given.strip() else instruction
        if not chat:
            prompts.append(request)
            continue
        turns = [{"role": "system", "content": system}] if system and system.strip() else []
        for position, exchange in enumerate(history or []):
            if not (isinstance(exchange, list) and len(exchange) == 2 and all(isinstance(t, str) for t in exchange)):
                raise DataError(
                    f"{where(index)}: 'history'[{position}] must be a pair [instruction, answer] of strings"
                )
            turns += [{"role": "user", "content": exchange[0]}, {"role": "assistant", "content": exchange[1]}]
        prompts.append([*turns, {"role": "user", "content": request}])
    replies = {"completion": "output"} if completion else {}
    replies |= {column: column for column in ("chosen", "rejected") if column in batch}
    converted = {"prompt": prompts}
    for column, source in replies.items():
        converted[column] = (
            [[{"role": "assistant", "content": reply}] for reply in batch[source]] if chat else batch[source]
        )
    return converted


def alpaca_prompts(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """Alpaca -> ``prompt`` (+ ``completion`` from ``output``, or ``chosen``/``rejected``), strings or chat."""
    from datasets import List, Value

    chat, completion = shape.found["chat"], shape.found["completion"]
    consumed = ["instruction", "input", "system", "history"] + (["output"] if completion else [])
    consumed = [column for column in consumed if column in dataset.column_names]
    kind = List({"role": Value("string"), "content": Value("string")}) if chat else Value("string")
    produced = ["prompt"] + (["completion"] if completion else []) + ["chosen", "rejected"] * shape.found["pairs"]
    features = _features(dataset, consumed, dict.fromkeys(produced, kind))
    fn_kwargs = {"chat": chat, "completion": completion, "where": where}
    return batched_map(dataset, _alpaca_batch, fn_kwargs, features, num_proc, "Reading Alpaca rows", consumed)


# ----------------------------------------------------------------- preference pairs


def shared_prefix_length(first: str, second: str) -> int:
    """Length of the longest common prefix (binary search over C-level slice compares)."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def split_text_prompt(chosen: str, rejected: str) -> int:
    """Where the implicit prompt of two flattened conversations ends.

    Right after the last assistant marker inside their shared prefix; without a marker,
    TRL's rule: the shared prefix, less a trailing space.
    """
    shared = shared_prefix_length(chosen, rejected)
    prefix = chosen[:shared]
    cut = max((prefix.rfind(marker) + len(marker) for marker in ASSISTANT_MARKERS if marker in prefix), default=-1)
    if cut >= 0:
        return cut
    if shared > 0 and chosen[shared - 1] == " ":
        shared -= 1
    return shared


def shared_turns(chosen: list, rejected: list) -> int:
    """Leading turns two conversations share; the last turn always stays a completion (as TRL)."""
    limit = min(len(chosen), len(rejected))
    turns = 0
    while turns < limit and chosen[turns] == rejected[turns]:
        turns += 1
    return min(turns, limit - 1)


def _extract_prompts(batch: dict, indices: list[int], kind: str, where: Any) -> dict:
    """Batched map: implicit prompt -> explicit ``prompt`` column."""
    prompts, chosen, rejected = [], [], []
    for index, pair_chosen, pair_rejected in zip(indices, batch["chosen"], batch["rejected"]):
        cut = (
            split_text_prompt(pair_chosen, pair_rejected) if kind == TEXT else shared_turns(pair_chosen, pair_rejected)
        )
        if cut == 0:
            raise DataError(
                f"{where(index)}: chosen and rejected share no prompt; add a 'prompt' column "
                "(or map one with data.columns)"
            )
        prompts.append(pair_chosen[:cut])
        chosen.append(pair_chosen[cut:])
        rejected.append(pair_rejected[cut:])
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


def _prompt_turns_from_string(batch: dict, indices: list[int], message_keys: list[str], where: Any) -> dict:
    """Batched map for the H4 shape: string prompt, full conversations in chosen/rejected."""
    prompts, chosen, rejected = [], [], []
    for index, prompt, pair_chosen, pair_rejected in zip(indices, batch["prompt"], batch["chosen"], batch["rejected"]):
        turns = shared_turns(pair_chosen, pair_rejected)
        shared = pair_chosen[:turns]
        if not shared:  # the conversations are the replies alone
            shared = [{key: None for key in message_keys} | {"role": "user", "content": prompt}]
        else:
            user_turns = [message for message in shared if message["role"] == "user"]
            if not user_turns or user_turns[-1]["content"].strip() != prompt.strip():
                raise DataError(
                    f"{where(index)}: 'prompt' is a string but chosen and rejected start with a different user turn; "
                    "give 'prompt' as a chat message list, or drop the column to use their shared turns"
                )
        prompts.append(shared)
        chosen.append(pair_chosen[turns:])
        rejected.append(pair_rejected[turns:])
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


def extract_prompts(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """Implicit prompt: give every pair an explicit prompt of the same kind as its completions."""
    fn_kwargs = {"kind": shape.kinds["chosen"], "where": where}
    features = _with_column_like(dataset, "prompt", "chosen")
    return batched_map(dataset, _extract_prompts, fn_kwargs, features, num_proc, "Extracting implicit prompts")


def move_prompt_turns(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """A string prompt with conversations: the prompt becomes their shared turns (or one user turn)."""
    fn_kwargs = {"message_keys": _message_keys(dataset, "chosen"), "where": where}
    features = _with_column_like(dataset, "prompt", "chosen")
    return batched_map(
        dataset, _prompt_turns_from_string, fn_kwargs, features, num_proc, "Moving repeated prompt turns"
    )


def _reply_lists(batch: dict, indices: list[int], source: str, where: Any) -> dict:
    """Batched map: one-message ``chosen``/``rejected`` -> one-message lists; the prompt from ``source``."""
    converted = {"chosen": [], "rejected": [], "prompt": []}
    for position, index in enumerate(indices):
        for column in COMPLETIONS_OF_PAIRS:
            if batch[column][position] is None:
                raise DataError(f"{where(index)}: missing key '{column}' (each example needs prompt, chosen, rejected)")
            converted[column].append([batch[column][position]])
        prompt = batch[source][position]
        converted["prompt"].append([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt)
    return converted


def reply_message_lists(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """LLaMA-Factory's pairs: ``chosen``/``rejected`` messages -> lists; the prompt is the conversation before."""
    from datasets import List, Value

    source = next(iter(shape.kinds))
    consumed = ["messages"] if source == "messages" else []
    message = dataset.features["chosen"]
    prompt = dataset.features[source] if shape.kinds[source] == CHAT else List(_struct_like(message, Value))
    features = _features(
        dataset,
        consumed,
        {
            "prompt": prompt,
            "chosen": List(message),
            "rejected": List(dataset.features["rejected"]),
        },
    )
    fn_kwargs = {"source": source, "where": where}
    return batched_map(dataset, _reply_lists, fn_kwargs, features, num_proc, "Reading reply messages", consumed)


# ----------------------------------------------------------------- prompt + completion from messages


def _split_at_last_reply(batch: dict, indices: list[int], where: Any) -> dict:
    """Batched map: ``messages`` -> ``prompt`` (the turns before the last assistant turn) + ``completion`` (it)."""
    prompts, completions = [], []
    for index, messages in zip(indices, batch["messages"]):
        replies = [position for position, message in enumerate(messages) if message["role"] == "assistant"]
        if not replies:
            raise DataError(f"{where(index)}: 'messages' has no assistant turn to use as the completion")
        last = replies[-1]
        if last != len(messages) - 1:
            raise DataError(
                f"{where(index)}: 'messages' goes on after its last assistant turn; end it with the assistant "
                "reply that is the completion"
            )
        if last == 0:
            raise DataError(f"{where(index)}: 'messages' has no turn before its assistant reply to use as the prompt")
        prompts.append(messages[:last])
        completions.append(messages[last:])
    return {"prompt": prompts, "completion": completions}


def prompt_completion_from_messages(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """A ``messages`` conversation -> prompt + completion (its last assistant turn)."""
    conversation = dataset.features["messages"]
    features = _features(dataset, ["messages"], {"prompt": conversation, "completion": conversation})
    desc = "Splitting conversations at the last reply"
    return batched_map(dataset, _split_at_last_reply, {"where": where}, features, num_proc, desc, ["messages"])


# ----------------------------------------------------------------- prompts


def _prompts_from_messages(batch: dict, indices: list[int], where: Any) -> dict:
    """Batched map: ``messages`` -> ``prompt`` (the turns before the last assistant turn)."""
    prompts = []
    for index, messages in zip(indices, batch["messages"]):
        assistant_turns = [position for position, message in enumerate(messages) if message["role"] == "assistant"]
        prompt = messages[: assistant_turns[-1]] if assistant_turns else messages
        if not prompt:
            raise DataError(f"{where(index)}: 'messages' has no turn before its assistant reply to use as the prompt")
        prompts.append(prompt)
    return {"prompt": prompts}


def prompts_from_messages(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """Add a ``prompt`` column built from a ``messages`` column (kept for rewards)."""
    features = _with_column_like(dataset, "prompt", "messages")
    return batched_map(
        dataset, _prompts_from_messages, {"where": where}, features, num_proc, "Taking prompts from messages"
    )


NORMALISERS = {
    SHAREGPT: Normaliser(sharegpt_messages, ("messages",)),
    ALPACA: Normaliser(alpaca_prompts, ("prompt", "completion", "chosen", "rejected")),
    REPLY_MESSAGES: Normaliser(reply_message_lists, PAIR_COLUMNS),
    IMPLICIT_PROMPT: Normaliser(extract_prompts, PAIR_COLUMNS),
    PROMPT_STRING_CONVERSATIONS: Normaliser(move_prompt_turns, PAIR_COLUMNS),
    MESSAGES: Normaliser(prompts_from_messages, ("prompt",)),
    MESSAGES_COMPLETION: Normaliser(prompt_completion_from_messages, ("prompt", "completion")),
}


# ----------------------------------------------------------------- helpers


def batched_map(
    dataset: Any,
    function: Any,
    fn_kwargs: dict,
    features: Any,
    num_proc: int | None,
    desc: str,
    remove_columns: list[str] | None = None,
) -> Any:
    """``dataset.map(function, batched=True, with_indices=True)`` into ``features``, as every stage runs it
    (cached by ``datasets``, ``num_proc`` workers, a progress bar only for large datasets)."""
    with quiet_datasets(show_progress=len(dataset) >= PROGRESS_ROWS):
        return dataset.map(
            function,
            fn_kwargs=fn_kwargs,
            batched=True,
            with_indices=True,
            features=features,
            remove_columns=remove_columns,
            num_proc=min(num_proc, len(dataset)) if num_proc else None,
            desc=desc,
        )


def _features(dataset: Any, removed: list[str], added: dict[str, Any]) -> Any:
    """``dataset``'s features less ``removed``, with ``added``: what a map that removes and writes them makes."""
    from datasets import Features

    kept = {name: feature for name, feature in dataset.features.items() if name not in removed}
    return Features(kept | added)


def _struct_like(message: Any, value: Any) -> dict:
    """Role/content message features with the keys of ``message`` (a struct feature), for a built user turn."""
    if isinstance(message, dict):
        return {key: feature for key, feature in message.items()} | {
            "role": value("string"),
            "content": value("string"),
        }
    return message  # JSON messages: any keys


def _with_column_like(dataset: Any, column: str, like: str) -> Any:
    """``dataset``'s features with ``column`` typed as ``like`` (what the map writes into it)."""
    features = dataset.features.copy()
    features[column] = features[like]
    return features


def _message_keys(dataset: Any, column: str) -> list[str]:
    """The keys of ``column``'s message structs (none for JSON messages, which hold only their own)."""
    import pyarrow as pa

    message_type = dataset.data.schema.field(column).type.value_type
    return list(message_type.names) if pa.types.is_struct(message_type) else []
