"""``flux chat CHECKPOINT``: talk to a model in the terminal, turn by turn.

Each reply is generated from the whole conversation so far, formatted by the model's chat
template, and printed as it is generated. ``/reset`` forgets the conversation (the system
prompt stays), ``/exit`` or Ctrl-D ends it. A turn that cannot be generated (the
conversation outgrew the model's context, say) is one line on stderr and is dropped; the
chat goes on.
"""

from __future__ import annotations

import sys
from typing import Any

from flux_core.errors import FluxError
from flux_core.generation import generate_samples, generation_settings

COMMANDS = "/reset forgets the conversation, /exit or Ctrl-D ends"


def chat(model: Any, tokenizer: Any, *, system: str | None = None, stream: bool = True, **options: Any) -> None:
    """Read user turns from stdin until ``/exit`` or end of input; answer each with ``model``.

    ``options`` are :func:`flux_core.generation.generation_settings`' (``max_new_tokens``,
    ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``); they are checked once,
    before the first turn.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise FluxError(
            "this tokenizer has no chat template, so turns cannot be told apart: flux chat needs a chat model; "
            "use flux generate --raw for plain text completion"
        )
    if options.get("num_samples", 1) != 1:
        raise FluxError("flux chat gives one reply per turn: num_samples is not an option here")
    generation_settings(**options)
    history: list[dict[str, str]] = []
    print(f"flux chat: type a message; {COMMANDS}.")
    while True:
        try:
            text = input("user> ").strip()
        except EOFError:  # Ctrl-D, or the end of piped input
            print()
            return
        if text == "/exit":
            return
        if text == "/reset":
            history.clear()
            print("(conversation reset)")
            continue
        if not text:
            continue
        if text.startswith("/") and " " not in text:
            print(f"unknown command {text}: {COMMANDS}")
            continue
        history.append({"role": "user", "content": text})
        reply = _answer(model, tokenizer, history, system, stream, options)
        if reply is None:
            history.pop()  # the turn failed: the user may rephrase, or /reset
        else:
            history.append({"role": "assistant", "content": reply})


def _answer(
    model: Any, tokenizer: Any, history: list[dict[str, str]], system: str | None, stream: bool, options: dict
) -> str | None:
    """The assistant's reply to ``history`` (printed), or ``None`` after a one-line error."""
    streamer = None
    if stream:
        from transformers import TextStreamer

        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    print("assistant> ", end="", flush=True)
    try:
        [reply] = generate_samples(model, tokenizer, history, system=system, streamer=streamer, **options)
    except FluxError as error:
        print()
        print(f"flux: error: {error}; /reset to start over", file=sys.stderr)
        return None
    if streamer is None:
        print(reply)
    return reply
