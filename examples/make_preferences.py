"""Write synthetic preference pairs with a learnable chosen/rejected difference.

Chosen answers are polite, complete sentences; rejected ones are curt and sloppy
(the tutorial's own contrast). Deterministic: the same --seed writes the same file.
``--shape`` writes the same pairs in the shape a public dataset ships in (see SHAPES).

    python examples/make_preferences.py examples/preferences.jsonl --pairs 256
    python examples/make_preferences.py hh.jsonl --shape hh
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


def _conversation(prompt: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


# How public preference datasets lay out the same pair.
SHAPES = {
    # prompt, chosen, rejected as strings (the tutorial's data)
    "explicit": lambda pair, index: pair,
    # Anthropic/hh-rlhf: full transcripts only; the prompt is their shared prefix
    "hh": lambda pair, index: {
        key: f"\n\nHuman: {pair['prompt']}\n\nAssistant: {pair[key]}" for key in ("chosen", "rejected")
    },
    # trl-lib/ultrafeedback_binarized: full conversations, no prompt column
    "conversational": lambda pair, index: {
        key: _conversation(pair["prompt"], pair[key]) for key in ("chosen", "rejected")
    },
    # HuggingFaceH4/ultrafeedback_binarized: a string prompt repeated inside full conversations, extra columns
    "h4": lambda pair, index: {
        "prompt": pair["prompt"],
        "chosen": _conversation(pair["prompt"], pair["chosen"]),
        "rejected": _conversation(pair["prompt"], pair["rejected"]),
        "prompt_id": f"{index:08x}",
        "messages": _conversation(pair["prompt"], pair["chosen"]),
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    },
}


def make_shaped_pairs(count: int, seed: int, shape: str = "explicit") -> list[dict]:
    """``make_pairs`` laid out in one of SHAPES."""
    return [SHAPES[shape](pair, index) for index, pair in enumerate(make_pairs(count, seed))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--pairs", type=int, default=256, help="number of pairs (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="explicit", help="dataset layout (default explicit)")
    args = parser.parse_args()
    with open(args.output, "w") as handle:
        for pair in make_shaped_pairs(args.pairs, args.seed, args.shape):
            handle.write(json.dumps(pair) + "\n")
    print(f"wrote {args.pairs} preference pairs to {args.output}")


if __name__ == "__main__":
    main()
