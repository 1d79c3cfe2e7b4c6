"""Flux GRPO vs raw TRL GRPOTrainer: step time and reward curves, side by side in one process.

Both train the tiny model on the same prompts, seed and steps with the same settings
(8 generations of 16 tokens, beta 0.04, lr 1e-3, batch 8) and the same reward: the
share of characters that are the letter e (Flux: the built-in ``pattern_fraction``;
TRL: a plain function). Runs alternate in ABBA order; the median step time (after 5 warm-up
steps) of each is compared. Target: time ratio <= 1.02. The reward curves show that the
wrapper learns exactly like TRL itself (identical on one thread; with more threads CPU runs
are not bit-identical, so the curves may differ in detail).

    python benchmarks/bench_grpo.py [--steps 150] [--repeats 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / ".cache" / "tiny-model"

SETTINGS = dict(batch_size=8, num_generations=8, max_completion_length=16, beta=0.04, learning_rate=1e-3, seed=0)


def e_fraction(prompts, completions, **kwargs):
    """The raw-TRL twin of Flux's pattern_fraction reward with pattern 'e'."""
    return [c.count("e") / len(c) if c else 0.0 for c in completions]


def run_flux(model: Path, records: list[dict], steps: int, output_dir: str) -> tuple[list[float], list[float]]:
    from flux import FluxConfig, FluxTrainer

    config = FluxConfig.from_dict(
        {
            "model_path": str(model),
            "output_dir": output_dir,
            "num_steps": steps,
            "batch_size": SETTINGS["batch_size"],
            "learning_rate": SETTINGS["learning_rate"],
            "seed": SETTINGS["seed"],
            "gradient_checkpointing": True,  # TRL's default: compare the wrapper, not the defaults
            "algorithm": {
                "name": "grpo",
                "num_generations": SETTINGS["num_generations"],
                "max_completion_length": SETTINGS["max_completion_length"],
                "beta": SETTINGS["beta"],
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
            },
        }
    )
    trainer = FluxTrainer(config, show_progress=False)
    stamps: list[float] = []
    trainer.add_step_callback(lambda result: stamps.append((time.perf_counter(), time.process_time())))
    result = trainer.fit(prompts=records)
    return stamps, result.metric("reward")


def run_trl(model: Path, records: list[dict], steps: int, output_dir: str) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    stamps: list[float] = []
    rewards: list[float] = []

    class Stamp(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                stamps.append((time.perf_counter(), time.process_time()))
                rewards.append(logs["reward"])

    args = GRPOConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=SETTINGS["batch_size"],
        learning_rate=SETTINGS["learning_rate"],
        seed=SETTINGS["seed"],
        num_generations=SETTINGS["num_generations"],
        max_completion_length=SETTINGS["max_completion_length"],
        beta=SETTINGS["beta"],
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(model)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model),
        reward_funcs=[e_fraction],
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        callbacks=[Stamp()],
    )
    trainer.remove_callback(PrinterCallback)  # as Flux does: printing every log dict is not training time
    trainer.train()
    return stamps, rewards


def median_step(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Median wall and CPU seconds per step, after 5 warm-up steps.

    CPU time is reported too because the machine is shared: another process stealing
    the core inflates wall time but not the CPU time this run needed.
    """
    wall = statistics.median(b[0] - a[0] for a, b in zip(stamps[5:], stamps[6:]))
    cpu = statistics.median(b[1] - a[1] for a, b in zip(stamps[5:], stamps[6:]))
    return wall, cpu


def windowed(values: list[float], width: int) -> list[float]:
    return [statistics.mean(values[start : start + width]) for start in range(0, len(values), width)]


def main(steps: int = 150, repeats: int = 4) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    from make_prompts import make_prompts

    if not (TINY_MODEL / "config.json").exists():
        from flux_core.testing import build_tiny_model

        build_tiny_model(TINY_MODEL)
    records = make_prompts(256, seed=0)
    step_times: dict[str, list[tuple[float, float]]] = {"trl": [], "flux": []}
    curves: dict[str, list[float]] = {}
    runs = (("trl", run_trl), ("flux", run_flux))
    for repeat in range(repeats):
        # ABBA order: drift in machine load (other users, thermal) hits both sides alike.
        for kind, run in runs if repeat % 2 == 0 else runs[::-1]:
            with tempfile.TemporaryDirectory() as output_dir:
                stamps, rewards = run(TINY_MODEL, records, steps, output_dir)
            step_times[kind].append(median_step(stamps))
            curves.setdefault(kind, rewards)  # the first run of each

    def median(kind: str, index: int) -> float:
        return statistics.median(times[index] for times in step_times[kind])

    trl_step, flux_step = median("trl", 0), median("flux", 0)
    trl_cpu, flux_cpu = median("trl", 1), median("flux", 1)
    print(
        f"GRPO, tiny model (hidden 128, 2 layers), batch {SETTINGS['batch_size']} = 1 prompt x "
        f"{SETTINGS['num_generations']} generations of {SETTINGS['max_completion_length']} tokens, beta "
        f"{SETTINGS['beta']}, {steps} steps, median of {repeats} runs each (one process, ABBA order)"
    )
    print(f"{'':12}{'step time (ms)':>16}{'CPU ms/step':>14}{'steps/s':>10}")
    print(f"{'raw TRL':12}{trl_step * 1e3:>16.2f}{trl_cpu * 1e3:>14.2f}{1 / trl_step:>10.1f}")
    print(f"{'Flux':12}{flux_step * 1e3:>16.2f}{flux_cpu * 1e3:>14.2f}{1 / flux_step:>10.1f}")
    print(f"{'Flux / TRL':12}{flux_step / trl_step:>16.3f}{flux_cpu / trl_cpu:>14.3f}   (target <= 1.02)")
    width = max(1, steps // 10)
    print(f"\nmean reward (share of 'e') per {width} steps, first run of each:")
    print(f"{'steps':>12}{'raw TRL':>10}{'Flux':>10}")
    for index, (trl_reward, flux_reward) in enumerate(
        zip(windowed(curves["trl"], width), windowed(curves["flux"], width))
    ):
        span = f"{index * width + 1}-{min(steps, (index + 1) * width)}"
        print(f"{span:>12}{trl_reward:>10.3f}{flux_reward:>10.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    main(args.steps, args.repeats)
