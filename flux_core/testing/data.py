"""Deterministic synthetic training data for tests and demos: the same ``seed`` gives the same rows.

Chosen answers are polite, complete sentences; rejected ones are curt and sloppy (the DPO tutorial's own
contrast), so a few steps on the tiny model already move the reward margin. ``examples/make_preferences.py``
and ``examples/make_prompts.py`` write these rows to JSONL for the demos.
"""

from __future__ import annotations

import random

TOPICS = [
    "quantum computing",
    "machine learning",
    "the water cycle",
    "photosynthesis",
    "the stock market",
    "black holes",
    "climate change",
    "the internet",
    "vaccines",
    "electric cars",
    "the roman empire",
    "jazz music",
    "volcanoes",
    "honey bees",
    "the moon landing",
    "recycling",
    "sleep",
    "coffee",
]
TASKS = ["Explain {}.", "Describe {} briefly.", "What is {}?", "Write a short note about {}.", "Summarize {}."]
CHOSEN = [
    "Thank you for the question. {T} is a clear example of how simple ideas build complex results.",
    "Here is a short answer: {T} can be explained step by step, and each step is simple.",
    "Certainly. In short, {T} is best understood through one clear example and a summary.",
]
REJECTED = [
    "idk lol, {t} is complicated stuff",
    "{t}? whatever, look it up",
    "ugh {t} is boring, no idea tbh",
]


def preference_pairs(count: int, seed: int = 0) -> list[dict]:
    """``count`` preference pairs ``{"prompt", "chosen", "rejected"}`` (strings)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        pairs.append(
            {
                "prompt": rng.choice(TASKS).format(topic),
                "chosen": rng.choice(CHOSEN).format(T=topic.capitalize()),
                "rejected": rng.choice(REJECTED).format(t=topic),
            }
        )
    return pairs


def prompt_rows(count: int, seed: int = 0, chat: bool = False) -> list[dict]:
    """``count`` prompt records ``{"prompt", "topic"}``; the prompt is a user message when ``chat``. The
    ``topic`` column reaches reward functions as a keyword argument."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        text = rng.choice(TASKS).format(topic)
        prompt = [{"role": "user", "content": text}] if chat else text
        records.append({"prompt": prompt, "topic": topic})
    return records
