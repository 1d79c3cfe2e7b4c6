"""Write synthetic preference pairs with a learnable chosen/rejected difference.

Chosen answers are polite, complete sentences; rejected ones are curt and sloppy
(the tutorial's own contrast). Deterministic: the same --seed writes the same file.
``--shape`` writes the same pairs in the shape a public dataset ships in (see SHAPES).

    python examples/make_preferences.py examples/preferences.jsonl --pairs 256
    python examples/make_preferences.py hh.jsonl --shape hh
"""

import argparse
import json

# The pairs themselves come from Flux's test kit, so the demos, the tests and plugin authors' tests share them.
from flux_core.testing.data import preference_pairs as make_pairs


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
