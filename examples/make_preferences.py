"""Write synthetic preference pairs with a learnable chosen/rejected difference.

Chosen answers are polite, complete sentences; rejected ones are curt and sloppy
(the tutorial's own contrast). Deterministic: the same --seed writes the same file.

    python examples/make_preferences.py examples/preferences.jsonl --pairs 256
"""

import argparse
import json
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


def make_pairs(count: int, seed: int) -> list[dict]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--pairs", type=int, default=256, help="number of pairs (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    with open(args.output, "w") as handle:
        for pair in make_pairs(args.pairs, args.seed):
            handle.write(json.dumps(pair) + "\n")
    print(f"wrote {args.pairs} preference pairs to {args.output}")


if __name__ == "__main__":
    main()
