"""Experiment trackers (``report_to``): which ones exist, what each needs, and logging from Flux's own loops.

TRL-wrapped algorithms (DPO, GRPO, SFT, ...) hand ``report_to`` and ``run_name`` to
transformers' own integrations (``TrainingArguments.report_to``). Algorithms with their own
loop (PPO) log each step's metrics, under the same names as ``metrics.jsonl``, through
accelerate's tracker classes (:class:`StepTrackers`).

TensorBoard writes to ``output_dir/runs/<run_name>`` in both cases (:func:`tensorboard_dir`), one
folder per run: a resumed run continues it, and the steps after its checkpoint that the
interrupted start had already logged are purged (``SummaryWriter(purge_step=...)``,
:func:`first_logged_step`), so TensorBoard shows every step once.
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


def tensorboard_dir(config: Any) -> Path:
    """Where TensorBoard logs a run: ``output_dir/runs/<run_name>``, the same folder when it resumes."""
    return Path(config.output_dir) / TRACKER_DIR / run_name_of(config)


def first_logged_step(run: Any) -> int:
    """The first step this start of a run logs: 1, or N + 1 when it resumes from ``checkpoint-N``.

    As TensorBoard's ``purge_step``, it hides the events at and after that step that an earlier
    start wrote to the same folder: the steps an interrupted run logged after its last checkpoint
    (trained again now), or all of an overwritten run's.
    """
    resume = getattr(run, "resume", None)
    return resume.step + 1 if resume is not None else 1


def continue_tensorboard_run(trainer: Any, config: Any, run: Any) -> None:
    """Point transformers' TensorBoard callback on ``trainer`` at :func:`tensorboard_dir` with
    ``purge_step`` :func:`first_logged_step` (by default it opens a new timestamped folder per start)."""
    if "tensorboard" not in config.report_to or not trainer.is_world_process_zero():
        return
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    callbacks = trainer.callback_handler.callbacks
    for index, callback in enumerate(callbacks):
        if isinstance(callback, TensorBoardCallback):
            writer = SummaryWriter(log_dir=str(tensorboard_dir(config)), purge_step=first_logged_step(run))
            callbacks[index] = TensorBoardCallback(tb_writer=writer)


class StepTrackers:
    """A step callback logging every step's metrics to ``config.report_to`` (for loops without a Trainer).

    ``run``: the run's :class:`~flux_core.run.context.RunContext` (a resumed run continues its
    TensorBoard folder, see :func:`first_logged_step`).
    """

    def __init__(self, config: Any, run: Any = None):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

        name, logs = run_name_of(config), str(tensorboard_dir(config).parent)
        build = {
            "tensorboard": lambda: TensorBoardTracker(name, logs, purge_step=first_logged_step(run)),
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
