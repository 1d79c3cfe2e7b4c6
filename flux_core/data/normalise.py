"""Stage 3 of loading data: bring a detected shape to its format's canonical columns.

Gets the dataset and the :class:`~flux_core.data.shapes.Shape` that
:mod:`flux_core.data.shapes` detected, its rows already checked (a normaliser reads only
well-formed values), and hands :mod:`flux_core.data.checks` the dataset in the format's
own columns with the canonical shape: what each of those columns now holds. A canonical
shape passes through untouched. ``NORMALISERS`` holds one normaliser per shape name:

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

from flux_core.data.formats import TEXT, column_kind
from flux_core.data.shapes import IMPLICIT_PROMPT, MESSAGES, PROMPT_STRING_CONVERSATIONS, Shape
from flux_core.data.sources import PROGRESS_ROWS, quiet_datasets
from flux_core.errors import DataError

# Where an assistant reply starts in a flattened conversation, most specific first.
ASSISTANT_MARKERS = ("Assistant:", "<|im_start|>assistant\n", "[/INST]", "### Response:")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


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
    kinds = {column: column_kind(dataset, column) for column in normaliser.produces}
    return dataset, replace(shape, kinds=kinds, canonical=True)


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
    return _map(dataset, _extract_prompts, fn_kwargs, features, num_proc, "Extracting implicit prompts")


def move_prompt_turns(dataset: Any, shape: Shape, where: Any, num_proc: int | None) -> Any:
    """A string prompt with conversations: the prompt becomes their shared turns (or one user turn)."""
    fn_kwargs = {"message_keys": _message_keys(dataset, "chosen"), "where": where}
    features = _with_column_like(dataset, "prompt", "chosen")
    return _map(dataset, _prompt_turns_from_string, fn_kwargs, features, num_proc, "Moving repeated prompt turns")


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
    return _map(dataset, _prompts_from_messages, {"where": where}, features, num_proc, "Taking prompts from messages")


NORMALISERS = {
    IMPLICIT_PROMPT: Normaliser(extract_prompts, PAIR_COLUMNS),
    PROMPT_STRING_CONVERSATIONS: Normaliser(move_prompt_turns, PAIR_COLUMNS),
    MESSAGES: Normaliser(prompts_from_messages, ("prompt",)),
}


# ----------------------------------------------------------------- helpers


def _map(dataset: Any, function: Any, fn_kwargs: dict, features: Any, num_proc: int | None, desc: str) -> Any:
    with quiet_datasets(show_progress=len(dataset) >= PROGRESS_ROWS):
        return dataset.map(
            function,
            fn_kwargs=fn_kwargs,
            batched=True,
            with_indices=True,
            features=features,
            num_proc=min(num_proc, len(dataset)) if num_proc else None,
            desc=desc,
        )


def _with_column_like(dataset: Any, column: str, like: str) -> Any:
    """``dataset``'s features with ``column`` typed as ``like`` (what the map writes into it)."""
    features = dataset.features.copy()
    features[column] = features[like]
    return features


def _message_keys(dataset: Any, column: str) -> list[str]:
    return list(dataset.data.schema.field(column).type.value_type.names)
