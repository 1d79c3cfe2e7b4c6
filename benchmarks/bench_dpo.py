"""Flux DPO vs raw TRL DPOTrainer: step time and peak memory, measured side by side.

Each run is a fresh subprocess (so peak RSS is its own), on the same tiny model, data,
seed and steps, with TRL's defaults on both sides. Runs alternate Flux/TRL and the
median step time of each is compared. Targets: time ratio <= 1.02, memory <= 1.05.

    python benchmarks/bench_dpo.py [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / ".cache" / "tiny-model"


def _worker(kind: str, model: str, data: str, steps: int, output_dir: str) -> dict:
    """One training run; returns the median seconds per step (after 5 warm-up steps) and peak RSS."""
    stamps: list[float] = []
    records = [json.loads(line) for line in Path(data).read_text().splitlines()]
    if kind == "flux":
        from flux import FluxConfig, FluxTrainer

        config = FluxConfig.from_dict(
            {
                "model_path": model,
                "output_dir": output_dir,
                "num_steps": steps,
                "batch_size": 8,
                "learning_rate": 5e-4,
                "max_length": 128,
                "algorithm": {"name": "dpo", "beta": 0.1},
            }
        )
        trainer = FluxTrainer(config, show_progress=False)
        trainer.add_step_callback(lambda result: stamps.append(time.perf_counter()))
        trainer.fit(prompts=records)
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import DPOConfig, DPOTrainer

        class Stamp(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    stamps.append(time.perf_counter())

        args = DPOConfig(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=8,
            learning_rate=5e-4,
            max_length=128,
            beta=0.1,
            seed=42,
            bf16=False,
            use_cpu=True,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model),
            args=args,
            train_dataset=Dataset.from_list(records),
            processing_class=AutoTokenizer.from_pretrained(model),
            callbacks=[Stamp()],
        )
        trainer.train()
    intervals = [b - a for a, b in zip(stamps[5:], stamps[6:])]
    return {
        "step_s": statistics.median(intervals),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run(kind: str, model: Path, data: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "TQDM_DISABLE": "1"}
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--model",
                str(model),
                "--data",
                str(data),
                "--steps",
                str(steps),
                "--output-dir",
                output_dir,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(steps: int = 40, repeats: int = 3) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_pairs

    if not (TINY_MODEL / "config.json").exists():
        from flux_core.testing import build_tiny_model

        build_tiny_model(TINY_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "preferences.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(256, seed=0)))
        results: dict[str, list[dict]] = {"flux": [], "trl": []}
        for _ in range(repeats):
            for kind in ("trl", "flux"):
                results[kind].append(_run(kind, TINY_MODEL, data, steps))

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    flux_step, trl_step = median("flux", "step_s"), median("trl", "step_s")
    flux_mem, trl_mem = median("flux", "peak_rss_mb"), median("trl", "peak_rss_mb")
    print(f"DPO, tiny model (hidden 128, 2 layers), batch 8, {steps} steps, median of {repeats} runs each")
    print(f"{'':12}{'step time (ms)':>16}{'peak RSS (MB)':>16}")
    print(f"{'raw TRL':12}{trl_step * 1e3:>16.2f}{trl_mem:>16.0f}")
    print(f"{'Flux':12}{flux_step * 1e3:>16.2f}{flux_mem:>16.0f}")
    print(f"{'Flux / TRL':12}{flux_step / trl_step:>16.3f}{flux_mem / trl_mem:>16.3f}   (targets <= 1.02, <= 1.05)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["flux", "trl"])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--output-dir")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.model, args.data, args.steps, args.output_dir)))
    else:
        main(args.steps, args.repeats)
