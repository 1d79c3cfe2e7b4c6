"""Experiment trackers (``report_to``): which ones exist, what each needs, and logging from Flux's own loops.

TRL-wrapped algorithms (DPO, GRPO) hand ``report_to`` and ``run_name`` to transformers'
own integrations (``TrainingArguments.report_to``). Algorithms with their own loop
(PPO) log each step's metrics, under the same names as ``metrics.jsonl``, through
accelerate's tracker classes (:class:`StepTrackers`). TensorBoard writes under
``output_dir/runs`` in both cases.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from flux_core.run.layout import TRACKER_DIR

# report_to name -> (module to import, package to install)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
}


def check_trackers(names: list[str]) -> list[str]:
    """``names`` without ``none``; raise ``ValueError`` naming the package a missing tracker needs."""
    chosen = [name for name in names if name != "none"]
    if "none" in names and chosen:
        raise ValueError("'none' cannot be combined with other trackers")
    for name in chosen:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker '{name}'; use any of: {', '.join(TRACKERS)}, none")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"{name} is not installed: pip install {package}")
    return chosen


def run_name_of(config: Any) -> str:
    """The run's name in trackers: ``run_name``, else the name of ``output_dir``."""
    return config.run_name or Path(config.output_dir).resolve().name


class StepTrackers:
    """A step callback logging every step's metrics to ``config.report_to`` (for loops without a Trainer)."""

    def __init__(self, config: Any):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

        name, logs = run_name_of(config), str(Path(config.output_dir) / TRACKER_DIR)
        build = {
            "tensorboard": lambda: TensorBoardTracker(name, logs),
            "wandb": lambda: WandBTracker(name, dir=config.output_dir),
            "mlflow": lambda: MLflowTracker(experiment_name=name, run_name=name),
            "trackio": lambda: TrackioTracker(name),
        }
        self.trackers = [build[tracker]() for tracker in check_trackers(config.report_to)]
        settings = {key: value for key, value in _flat(config.model_dump(mode="json")).items()}
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(settings)

    def __call__(self, result: Any) -> None:
        for tracker in self.trackers:
            tracker.log(result.metrics, step=result.step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b`` keys with scalar values (what trackers' hyperparameter tables take)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
