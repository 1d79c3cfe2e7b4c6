"""PPO vs GRPO on the same reward: how much reward each reaches per wall-clock second.

Runs the two demos as they ship (``configs/ppo-demo.yaml`` and ``configs/grpo-demo.yaml``:
tiny model, the same prompts, the same reward: the share of characters that are the
letter e), one after the other in one process, and times each from the ``fit()`` call,
so model loading, rollouts, reference/critic passes and updates all count. Reports, per
algorithm: wall time, steps/s, completions/s, the mean reward of the first and last 10%
of steps, the wall time until the moving-average reward (10 steps) first reaches a few
thresholds, and the moving-average reward reached after a few wall-clock budgets.

The two algorithms spend compute differently (GRPO: 8 completions of one prompt per
step, no critic; PPO: 16 prompts x 1 completion, a value model, 4 epochs of 2
minibatches), which is exactly what "reward per wall-second" compares. CPU runs are not
bit-identical; rerun for a second sample (``--repeats``).

    python benchmarks/bench_ppo.py [--repeats 1]
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
CONFIGS = {"GRPO": REPO / "configs" / "grpo-demo.yaml", "PPO": REPO / "configs" / "ppo-demo.yaml"}
THRESHOLDS = (0.2, 0.3, 0.5)
BUDGETS_S = (5.0, 10.0, 20.0, 30.0)
WINDOW = 10


def run(config_path: Path, records: list[dict], output_dir: str) -> tuple[list[float], list[float], int]:
    """Train one demo; return seconds since fit() at each step, rewards, completions per step."""
    from flux import FluxConfig, FluxTrainer

    config = FluxConfig.from_yaml(
        config_path, overrides=[f"model_path={TINY_MODEL}", f"output_dir={output_dir}", "checkpoint.save_steps=null"]
    )
    # GRPO's batch_size counts completions; PPO's counts prompts.
    is_ppo = config.algorithm.name == "ppo"
    per_step = config.batch_size * config.algorithm.num_generations if is_ppo else config.batch_size
    trainer = FluxTrainer(config, show_progress=False)
    stamps: list[float] = []
    trainer.add_step_callback(lambda result: stamps.append(time.perf_counter()))
    start = time.perf_counter()
    result = trainer.fit(prompts=records)
    return [stamp - start for stamp in stamps], result.metric("reward"), per_step


def moving_average(values: list[float], width: int = WINDOW) -> list[float]:
    return [statistics.mean(values[max(0, i - width + 1) : i + 1]) for i in range(len(values))]


def first_time_reaching(seconds: list[float], smoothed: list[float], threshold: float) -> float | None:
    return next((t for t, r in zip(seconds, smoothed) if r >= threshold), None)


def reward_at(seconds: list[float], smoothed: list[float], budget: float) -> float | None:
    reached = [r for t, r in zip(seconds, smoothed) if t <= budget]
    return reached[-1] if reached else None


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}" if unit else f"{value:.3f}"


def main(repeats: int = 1) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    from make_prompts import make_prompts

    if not (TINY_MODEL / "config.json").exists():
        from flux_core.testing import build_tiny_model

        build_tiny_model(TINY_MODEL)
    records = make_prompts(256, seed=0)  # what `make demo-grpo` / `make demo-ppo` train on
    rows = []
    for repeat in range(repeats):
        for name, path in CONFIGS.items():
            with tempfile.TemporaryDirectory() as output_dir:
                seconds, rewards, per_step = run(path, records, output_dir)
            smoothed = moving_average(rewards)
            tenth = max(1, len(rewards) // 10)
            rows.append(
                dict(
                    name=f"{name}" + (f" #{repeat + 1}" if repeats > 1 else ""),
                    steps=len(rewards),
                    wall=seconds[-1],
                    steps_per_s=len(rewards) / seconds[-1],
                    completions_per_s=len(rewards) * per_step / seconds[-1],
                    first=statistics.mean(rewards[:tenth]),
                    last=statistics.mean(rewards[-tenth:]),
                    reach={th: first_time_reaching(seconds, smoothed, th) for th in THRESHOLDS},
                    at={b: reward_at(seconds, smoothed, b) for b in BUDGETS_S},
                )
            )

    print("PPO vs GRPO demos, tiny model, reward = share of 'e' (configs/ppo-demo.yaml, configs/grpo-demo.yaml)")
    print(
        f"{'':10}{'steps':>6}{'wall s':>8}{'steps/s':>9}{'compl/s':>9}{'reward first 10%':>18}{'last 10%':>10}"
        f"{'gain/s':>8}"
    )
    for row in rows:
        gain = (row["last"] - row["first"]) / row["wall"]
        print(
            f"{row['name']:10}{row['steps']:>6}{row['wall']:>8.1f}{row['steps_per_s']:>9.1f}"
            f"{row['completions_per_s']:>9.0f}{row['first']:>18.3f}{row['last']:>10.3f}{gain:>8.4f}"
        )
    print(f"\nwall seconds until the {WINDOW}-step moving-average reward first reaches ...")
    print(f"{'':10}" + "".join(f"{th:>8}" for th in THRESHOLDS))
    for row in rows:
        print(f"{row['name']:10}" + "".join(f"{_fmt(row['reach'][th], 's'):>8}" for th in THRESHOLDS))
    print(f"\n{WINDOW}-step moving-average reward reached within ... wall seconds")
    print(f"{'':10}" + "".join(f"{b:>8.0f}" for b in BUDGETS_S))
    for row in rows:
        print(f"{row['name']:10}" + "".join(f"{_fmt(row['at'][b]):>8}" for b in BUDGETS_S))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    main(parser.parse_args().repeats)
