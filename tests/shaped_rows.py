"""Rows in the layouts practitioners' tools write, following their public documentation, for the data tests.

- ShareGPT: FastChat's ``{"id", "conversations": [{"from": "human" | "gpt", "value"}]}``; LLaMA-Factory's
  ``data/README.md`` adds a ``system`` column, a ``tools`` column (a JSON string) and ``function_call`` /
  ``observation`` turns (its glaive_toolcall demo), and preference pairs whose ``chosen``/``rejected`` are one
  ``{"from", "value"}`` message each after a ``conversations`` prompt;
- Alpaca: Stanford Alpaca's ``{"instruction", "input", "output"}`` (``input`` often empty); LLaMA-Factory adds
  ``system`` and ``history`` (``[[instruction, answer], ...]``), preference pairs (``chosen``/``rejected``
  strings instead of ``output``) and KTO rows;
- KTO conversations: LLaMA-Factory's kto_en_demo, ``{"messages": [{"role", "content"}], "label": bool}``;
- content parts: the multimodal-ready message content of OpenAI and transformers,
  ``[{"type": "text", "text": ...}]``.

Words come from the tiny test model's vocabulary, so a few training steps lower the loss.
"""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = ("quantum computing", "machine learning", "the ocean", "music", "history", "the weather", "food", "travel")
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def question(index: int) -> str:
    return f"Please explain {TOPICS[index % len(TOPICS)]} {index}."


def answer(index: int, good: bool = True) -> str:
    return f"Yes, {TOPICS[index % len(TOPICS)]} is simple and good." if good else "No. Bad answer, maybe."


def sharegpt_rows(count: int, system: bool = True) -> list[dict]:
    """FastChat/LLaMA-Factory ShareGPT: two exchanges per conversation, an ``id``, and a ``system`` column."""
    rows = []
    for index in range(count):
        row = {
            "id": f"identity_{index}",
            "conversations": [
                {"from": "human", "value": question(index)},
                {"from": "gpt", "value": answer(index)},
                {"from": "human", "value": "Thank you, and a short example?"},
                {"from": "gpt", "value": f"Example {index}: the model is clear."},
            ],
        }
        if system:
            row["system"] = "Be helpful and polite."
        rows.append(row)
    return rows


def sharegpt_tool_rows(count: int) -> list[dict]:
    """LLaMA-Factory's tool-call ShareGPT (glaive_toolcall_en_demo): function_call and observation turns."""
    return [
        {
            "conversations": [
                {"from": "human", "value": f"What is the weather in city {index}?"},
                {
                    "from": "function_call",
                    "value": json.dumps({"name": "get_weather", "arguments": {"city": f"c{index}"}}),
                },
                {"from": "observation", "value": json.dumps({"weather": "sunny"})},
                {"from": "gpt", "value": f"The weather in city {index} is sunny."},
            ],
            "tools": json.dumps([WEATHER_TOOL]),
        }
        for index in range(count)
    ]


def sharegpt_pairs(count: int) -> list[dict]:
    """LLaMA-Factory's ShareGPT preference pairs: a ``conversations`` prompt, one message each for the replies."""
    return [
        {
            "conversations": [
                {"from": "human", "value": question(index)},
                {"from": "gpt", "value": "Which part?"},
                {"from": "human", "value": "The simple part."},
            ],
            "chosen": {"from": "gpt", "value": answer(index)},
            "rejected": {"from": "gpt", "value": answer(index, good=False)},
        }
        for index in range(count)
    ]


def alpaca_rows(count: int, system: bool = False, history: bool = False) -> list[dict]:
    """Alpaca, every other row with an ``input``; LLaMA-Factory's ``system`` and ``history`` on request."""
    rows = []
    for index in range(count):
        row = {
            "instruction": question(index),
            "input": f"Context {index}: short and clear." if index % 2 == 0 else "",
            "output": answer(index),
        }
        if system:
            row["system"] = "Be helpful and polite."
        if history:
            row["history"] = [["Hello, can you help?", "Yes, I can help."]]
        rows.append(row)
    return rows


def alpaca_pairs(count: int) -> list[dict]:
    """LLaMA-Factory's Alpaca preference pairs: instruction and input, ``chosen``/``rejected`` strings."""
    return [
        {
            "instruction": question(index),
            "input": f"Context {index}: short and clear.",
            "chosen": answer(index),
            "rejected": answer(index, good=False),
        }
        for index in range(count)
    ]


def kto_conversations(count: int) -> list[dict]:
    """LLaMA-Factory's kto_en_demo: whole conversations, desirable or not, alternating."""
    return [
        {
            "messages": [
                {"role": "user", "content": question(index)},
                {"role": "assistant", "content": "Which part?"},
                {"role": "user", "content": "The simple part."},
                {"role": "assistant", "content": answer(index, good=index % 2 == 0)},
            ],
            "label": index % 2 == 0,
        }
        for index in range(count)
    ]


def content_part_rows(count: int) -> list[dict]:
    """``messages`` whose contents are lists of text parts (``text``, or ``value`` as some exporters write)."""
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": question(index)}, {"type": "text", "text": " Now."}],
                },
                {"role": "assistant", "content": [{"type": "text", "value": answer(index)}]},
            ]
        }
        for index in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)
