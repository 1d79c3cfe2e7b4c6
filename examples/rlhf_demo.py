"""The whole RLHF pipeline on the tiny offline model: SFT, then a reward model, then PPO against it.

    python examples/make_preferences.py examples/preferences.jsonl --pairs 256
    python examples/rlhf_demo.py    # or: make demo-rlhf

1. SFT (configs/sft-demo.yaml) on the chosen replies of the demo preference pairs;
2. a reward model (configs/rm-demo.yaml) from the SFT model on the same pairs, with held-out pairs;
3. PPO (configs/rlhf-ppo-demo.yaml) from the SFT model, rewarded by that reward model
   (``rewards: [{model: outputs/rm-demo/final}]``).

Prints each stage's headline metric (SFT loss, reward-model accuracy, PPO reward rising) and
wall time. Each stage starts afresh (``overwrite``): Flux refuses to train over a previous run.
"""

import argparse
import time

from flux import FluxConfig, FluxTrainer


def mean(values):
    return sum(values) / len(values)


def fit(config_path: str):
    """Train one stage; the config is read only now (PPO's checks that the reward model exists)."""
    config = FluxConfig.from_yaml(config_path)
    start = time.perf_counter()
    result = FluxTrainer(config, show_progress=False).fit(overwrite=True)
    return config, result, time.perf_counter() - start


def first_last(values: list[float], share: int = 10) -> tuple[float, float, int]:
    """Means of the first and last tenth (at least one value each)."""
    count = max(1, len(values) // share)
    return mean(values[:count]), mean(values[-count:]), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", default="configs/sft-demo.yaml")
    parser.add_argument("--rm", default="configs/rm-demo.yaml")
    parser.add_argument("--ppo", default="configs/rlhf-ppo-demo.yaml")
    args = parser.parse_args()
    total = time.perf_counter()

    config, result, seconds = fit(args.sft)
    first, last, count = first_last(result.metric("loss"))
    print(
        f"[1/3 SFT] {result.steps} steps in {seconds:.0f}s: loss {first:.3f} (first {count}) -> {last:.3f} (last {count})"
    )
    print(f"          model: {result.final_path}")

    config, result, seconds = fit(args.rm)
    accuracy = result.metric("accuracy")
    first, last, count = first_last(accuracy)
    held_out = result.history[-1].metrics.get("eval_accuracy")
    held_out_text = f"; held-out pairwise accuracy {held_out:.3f}" if held_out is not None else ""
    print(f"[2/3 RM]  {result.steps} steps in {seconds:.0f}s: train accuracy {first:.3f} -> {last:.3f}{held_out_text}")
    print(f"          reward model: {result.final_path}")

    config, result, seconds = fit(args.ppo)
    rewards = result.metric("reward")
    first, last, count = first_last(rewards)
    print(f"[3/3 PPO] {result.steps} steps in {seconds:.0f}s, reward model as the reward:")
    for start in range(0, len(rewards), max(1, len(rewards) // 6)):
        window = rewards[start : start + max(1, len(rewards) // 6)]
        print(f"          steps {start + 1:3d}-{start + len(window):3d}: reward {mean(window):+.3f}")
    print(f"          mean reward: first {count} steps {first:+.3f} -> last {count} steps {last:+.3f}")
    trainer = FluxTrainer(config, show_progress=False)
    trainer.load_checkpoint(result.final_path)
    sample = trainer.generate(  # raw: as PPO saw its text prompts, without the chat template
        "Explain black holes.", max_new_tokens=config.algorithm.max_completion_length, raw=True
    )
    print(f"          sample after PPO (a tiny random model: expect text only the reward model likes): {sample!r}")
    print(f"demo-rlhf: done in {time.perf_counter() - total:.0f}s")


if __name__ == "__main__":
    main()
