"""Train an online-algorithm demo (GRPO or PPO) and show that the reward rises.

    python examples/make_prompts.py examples/prompts.jsonl
    python examples/online_demo.py configs/grpo-demo.yaml   # or configs/ppo-demo.yaml

Prints the mean reward every 25 steps, the mean of the first and last 10% of steps,
and one sampled completion before and after training.
"""

import sys

from flux import FluxConfig, FluxTrainer


def mean(values):
    return sum(values) / len(values)


def main() -> None:
    config = FluxConfig.from_yaml(sys.argv[1] if len(sys.argv) > 1 else "configs/grpo-demo.yaml")
    trainer = FluxTrainer(config, show_progress=False)
    prompt = "Explain photosynthesis."
    # raw: the prompt as training sees it (text prompts go to the model without the chat template)
    sample = dict(max_new_tokens=config.algorithm.max_completion_length, temperature=1.0, raw=True)
    print(f"before: {trainer.generate(prompt, **sample)!r}")
    window = []

    @trainer.add_step_callback
    def report(result):
        window.append(result.metrics["reward"])
        if result.step % 25 == 0:
            print(
                f"step {result.step:4d}  reward {mean(window):.3f}  kl {result.metrics.get('kl', 0.0):.4f}  "
                f"completion_length {result.metrics['completion_length']:.1f}"
            )
            window.clear()

    result = trainer.fit()
    rewards = result.metric("reward")
    tenth = max(1, len(rewards) // 10)
    print(f"after:  {trainer.generate(prompt, **sample)!r}")
    print(
        f"mean reward: first {tenth} steps {mean(rewards[:tenth]):.3f} -> last {tenth} steps {mean(rewards[-tenth:]):.3f}"
    )
    print(f"best checkpoint: {result.best_path}; final: {result.final_path}")


if __name__ == "__main__":
    main()
