"""Write prompts for the GRPO demo: one JSON object a line, `prompt` plus a `topic` column.

The extra `topic` column is not needed by the demo's reward; it shows how dataset
columns reach reward functions as keyword arguments. Deterministic: the same --seed
writes the same file.

    python examples/make_prompts.py examples/prompts.jsonl --prompts 256
"""

import argparse
import json

# The prompts themselves come from Flux's test kit (the preference demo's topics and task phrasings).
from flux_core.testing.data import prompt_rows as make_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--prompts", type=int, default=256, help="number of prompts (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--chat", action="store_true", help="write chat messages instead of plain strings")
    args = parser.parse_args()
    with open(args.output, "w", encoding="utf-8") as handle:
        for record in make_prompts(args.prompts, args.seed, args.chat):
            handle.write(json.dumps(record) + "\n")
    print(f"wrote {args.prompts} prompts to {args.output}")


if __name__ == "__main__":
    main()
