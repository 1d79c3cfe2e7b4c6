"""GRPO against `flux serve`: synchronous rollouts vs adaptive async, wall time to a reward and steps/s.

Starts one `flux serve` (127.0.0.1, free port) on the tiny model and runs the same GRPO
run (the learning tests' reward: share of the letter e) with ``adaptive_async`` off and
on, alternating the order over ``--repeats`` rounds so both see the same machine load.
For each run: wall time of the training loop, steps/s, the wall time at which the
10-step moving average of the reward first reaches ``--target``, the time the trainer
spent waiting on generation, (async) the mean staleness, and the mean reward of the
first and last 10 steps.

``--server-latency S`` makes the server sleep S seconds at the start of every /generate
(``FLUX_SERVE_ADDED_LATENCY``, a benchmark-only setting of `flux serve`), as a remote
server under load would answer: the latency adaptive async is meant to hide.

    python benchmarks/bench_async.py [--steps 80] [--repeats 2] [--target 0.3] [--max-staleness 1]
    python benchmarks/bench_async.py --steps 40 --max-staleness 2 --server-latency 0.4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "online"))
sys.path.insert(0, str(REPO / "examples"))


def run_once(model_dir: Path, url: str, output_dir: Path, args, adaptive: bool) -> dict:
    from make_prompts import make_prompts

    from flux_core.config import FluxConfig
    from flux_core.trainer import FluxTrainer

    config = FluxConfig.from_dict(
        {
            "model_path": str(model_dir),
            "output_dir": str(output_dir),
            "num_steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": 2e-3,
            "seed": 0,
            "sglang": {"base_url": url, "timeout": 120},
            "adaptive_async": {"enabled": adaptive, "max_staleness": args.max_staleness},
            "algorithm": {
                "name": "grpo",
                "num_generations": 8,
                "max_completion_length": args.max_completion_length,
                "beta": 0.04,
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
            },
        }
    )
    trainer = FluxTrainer(config, show_progress=False)
    times: list[float] = []
    trainer.add_step_callback(lambda result: times.append(time.perf_counter()))
    started = time.perf_counter()
    result = trainer.fit(prompts=make_prompts(64, seed=0))
    rewards = result.metric("reward")
    reached = None
    for index in range(9, len(rewards)):
        if statistics.mean(rewards[index - 9 : index + 1]) >= args.target:
            reached = times[index] - started
            break
    loop = times[-1] - started  # the training loop, without saving final/ and best/
    waits = result.metric("generation_wait_s")
    return {
        "wall_s": loop,
        "steps_per_s": len(times) / loop,
        "to_target_s": reached,
        "reward_first10": statistics.mean(rewards[:10]),
        "reward_last10": statistics.mean(rewards[-10:]),
        "wait_s": sum(waits) if waits else None,
        "staleness": statistics.mean(result.metric("staleness")) if adaptive else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.3, help="10-step mean reward to reach")
    parser.add_argument("--max-staleness", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="completions per step (8 per prompt)")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument(
        "--server-latency", type=float, default=0.0, help="seconds the server adds to every /generate (default 0)"
    )
    args = parser.parse_args()

    from test_serve import start_server

    from flux_core.online.serve import ADDED_LATENCY_ENV
    from flux_core.testing import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = build_tiny_model(workdir / "model", seed=0)
        server = start_server(
            model_dir, "--weights-root", str(workdir), env={ADDED_LATENCY_ENV: str(args.server_latency)}
        )
        runs: dict[str, list[dict]] = {"sync": [], "adaptive async": []}
        try:
            for round_index in range(args.repeats):
                order = ["sync", "adaptive async"] if round_index % 2 == 0 else ["adaptive async", "sync"]
                for name in order:
                    out = workdir / f"{name.replace(' ', '-')}-{round_index}"
                    measured = run_once(model_dir, server.url, out, args, adaptive=name != "sync")
                    runs[name].append(measured)
                    print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in measured.items()})
        finally:
            server.stop()

    def median(name: str, key: str):
        values = [run[key] for run in runs[name] if run[key] is not None]
        return statistics.median(values) if values else None

    def show(value, digits=2):
        return "not reached" if value is None else f"{value:.{digits}f}"

    print(
        f"\n{args.steps} steps, batch {args.batch_size} (8 generations), {args.max_completion_length} tokens, "
        f"max_staleness {args.max_staleness}, server latency {args.server_latency:g} s, median of {args.repeats}:"
    )
    print(
        f"| mode | wall s | steps/s | s to 10-step reward >= {args.target:.2f} | trainer waiting on generation, s "
        "| mean staleness | reward, first 10 -> last 10 steps |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in runs:
        waited = show(median(name, "wait_s"), 1) if name != "sync" else "(all generation)"
        print(
            f"| {name} | {show(median(name, 'wall_s'), 1)} | {show(median(name, 'steps_per_s'))} | "
            f"{show(median(name, 'to_target_s'), 1)} | {waited} | {show(median(name, 'staleness'))} | "
            f"{show(median(name, 'reward_first10'))} -> {show(median(name, 'reward_last10'))} |"
        )
    ratios = [a["wall_s"] / s["wall_s"] for a, s in zip(runs["adaptive async"], runs["sync"])]
    print(f"adaptive async / sync wall time, per round: {', '.join(f'{r:.2f}x' for r in ratios)}")


if __name__ == "__main__":
    main()
