"""Experiment trackers (``report_to``): which ones exist, what each needs, and logging from Flux's own loops.

TRL-wrapped algorithms (DPO, GRPO, SFT, ...) hand ``report_to`` and ``run_name`` to
transformers' own integrations (``TrainingArguments.report_to``). Algorithms with their own
loop (PPO) log each step's metrics, under the same names as ``metrics.jsonl``, through
accelerate's tracker classes (:class:`StepTrackers`).

TensorBoard writes to ``output_dir/runs/<run_name>`` in both cases (:func:`tensorboard_dir`), one
folder per run: a resumed run continues it, and the steps after its checkpoint that the
interrupted start had already logged are purged (``SummaryWriter(purge_step=...)``,
:func:`first_logged_step`), so TensorBoard shows every step once. wandb and MLflow continue the
same run too: its ids are kept in ``output_dir/runs/tracker_ids.json`` and handed back to them by
``--resume`` (:func:`continued_tracker_runs`). wandb ignores the steps it already has; MLflow
records the steps trained again after the checkpoint a second time (the same values: resuming is exact).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flux_core.run.directory import is_main_process
from flux_core.run.layout import TRACKER_DIR, TRACKER_IDS_FILE

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


def _ids_file(config: Any) -> Path:
    return Path(config.output_dir) / TRACKER_DIR / TRACKER_IDS_FILE


def tracker_run_ids(config: Any, run: Any) -> dict[str, str]:
    """The wandb/MLflow run ids of the run ``run`` resumes (``{}`` for a fresh start, which gets new ones)."""
    if getattr(run, "resume", None) is None:
        return {}
    try:
        stored = json.loads(_ids_file(config).read_text())
    except (OSError, ValueError):
        return {}  # a run started before the ids were kept: the trackers start a new run, as they did
    return {key: value for key, value in stored.items() if isinstance(value, str)} if isinstance(stored, dict) else {}


def save_tracker_run_ids(config: Any, ids: dict[str, str]) -> None:
    if ids and is_main_process():
        path = _ids_file(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def continued_tracker_runs(config: Any, run: Any) -> Iterator[dict[str, str]]:
    """While training: wandb logs to the run id kept for this run (``WANDB_RUN_ID``, ``WANDB_RESUME=allow``)
    and, when resuming, MLflow reattaches to its run (``MLFLOW_RUN_ID``), as transformers' integrations read
    them. Yields the ids; :func:`mlflow_run_recorder` adds MLflow's, which MLflow itself picks."""
    ids = tracker_run_ids(config, run)
    settings = {}
    if "wandb" in config.report_to:
        ids.setdefault("wandb", uuid.uuid4().hex[:12])
        settings.update(WANDB_RUN_ID=ids["wandb"], WANDB_RESUME="allow")
    if "mlflow" in config.report_to and "mlflow" in ids:
        settings["MLFLOW_RUN_ID"] = ids["mlflow"]
    save_tracker_run_ids(config, ids)
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield ids
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mlflow_run_recorder(config: Any, ids: dict[str, str]):
    """A ``TrainerCallback`` that keeps the id of the MLflow run transformers' integration started, so that
    ``--resume`` reattaches to it; ``None`` when MLflow is not a tracker of the run."""
    if "mlflow" not in config.report_to:
        return None
    from transformers import TrainerCallback

    class RecordMLflowRun(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            import mlflow

            active = mlflow.active_run()
            if active is not None and state.is_world_process_zero:
                ids["mlflow"] = active.info.run_id
                save_tracker_run_ids(config, ids)

    return RecordMLflowRun()


class StepTrackers:
    """A step callback logging every step's metrics to ``config.report_to`` (for loops without a Trainer).

    ``run``: the run's :class:`~flux_core.run.context.RunContext` (a resumed run continues its
    TensorBoard folder, see :func:`first_logged_step`).
    """

    def __init__(self, config: Any, run: Any = None):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

        name, logs = run_name_of(config), str(tensorboard_dir(config).parent)
        ids = tracker_run_ids(config, run)
        ids.setdefault("wandb", uuid.uuid4().hex[:12])
        build = {
            "tensorboard": lambda: TensorBoardTracker(name, logs, purge_step=first_logged_step(run)),
            "wandb": lambda: WandBTracker(name, dir=config.output_dir, id=ids["wandb"], resume="allow"),
            "mlflow": lambda: MLflowTracker(experiment_name=name, run_name=name, run_id=ids.get("mlflow")),
            "trackio": lambda: TrackioTracker(name),
        }
        chosen = check_trackers(config.report_to)
        self.trackers = [build[tracker]() for tracker in chosen]
        settings = {key: value for key, value in _flat(config.model_dump(mode="json")).items()}
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(settings)
            if getattr(tracker, "active_run", None) is not None:  # MLflow picked its run id: kept for --resume
                ids["mlflow"] = tracker.active_run.info.run_id
        save_tracker_run_ids(config, {key: ids[key] for key in ("wandb", "mlflow") if key in chosen and key in ids})

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
