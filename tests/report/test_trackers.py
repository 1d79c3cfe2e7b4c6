"""report_to: the same step metrics reach experiment trackers as metrics.jsonl."""

import importlib.util
import json
from pathlib import Path

import pytest

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.trainer import FluxTrainer

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed"
)


def tensorboard_scalars(output_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar written under ``output_dir/runs``: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in (output_dir / "runs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({event.step: event.value for event in accumulator.Scalars(tag)})
    return scalars


def metrics_jsonl(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@needs_tensorboard
def test_dpo_reports_to_tensorboard_what_metrics_jsonl_holds(dpo_config, preference_records):
    config = dpo_config(num_steps=4, report_to="tensorboard")
    FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    scalars, rows = tensorboard_scalars(Path(config.output_dir)), metrics_jsonl(Path(config.output_dir))
    # transformers' own TensorBoard integration, under TRL's names
    for tag, name in [
        ("train/loss", "loss"),
        ("train/rewards/margins", "reward_margin"),
        ("train/grad_norm", "grad_norm"),
    ]:
        assert scalars[tag] == pytest.approx({row["step"]: row[name] for row in rows}, rel=1e-6), tag


@needs_tensorboard
def test_ppo_reports_its_own_loop_to_tensorboard_under_flux_names(tiny_model_dir, tmp_path):
    from make_prompts import make_prompts

    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "ppo"),
            "num_steps": 3,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "report_to": ["tensorboard"],
            "run_name": "my-ppo-run",
            "algorithm": {
                "name": "ppo",
                "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
                "max_completion_length": 8,
            },
        }
    )
    FluxTrainer(config, show_progress=False).fit(prompts=make_prompts(16, seed=0))
    assert (tmp_path / "ppo" / "runs" / "my-ppo-run").is_dir()  # the run name reaches the tracker
    scalars, rows = tensorboard_scalars(tmp_path / "ppo"), metrics_jsonl(tmp_path / "ppo")
    for name in ("reward", "kl", "loss", "learning_rate"):
        assert scalars[name] == pytest.approx({row["step"]: row[name] for row in rows}, rel=1e-6), name


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_package(dpo_config):
    missing = next((name for name in ("wandb", "mlflow", "trackio") if importlib.util.find_spec(name) is None), None)
    if missing is None:
        pytest.skip("every optional tracker is installed here")
    with pytest.raises(ConfigError) as error:
        dpo_config(report_to=[missing])
    assert str(error.value) == f"config: report_to: {missing} is not installed: pip install {missing}"
    with pytest.raises(ConfigError, match="report_to: unknown tracker 'comet'; use any of: tensorboard"):
        dpo_config(report_to="comet")
    with pytest.raises(ConfigError, match="trl.report_to: is set by Flux: use report_to"):
        dpo_config(trl={"report_to": "wandb"})


@needs_tensorboard
def test_a_resumed_dpo_run_continues_its_tensorboard_run_with_every_step_once(dpo_config, preference_records):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Steps 1-5, checkpoints at 2 and 4; step 5 is logged, then the run goes on from checkpoint-4 to step 6:
    # step 5 is trained and logged again, as after a kill between two checkpoints.
    first = dpo_config(num_steps=5, checkpoint={"save_steps": 2}, report_to="tensorboard")
    FluxTrainer(first, show_progress=False).fit(prompts=preference_records)
    resumed = dpo_config(num_steps=6, checkpoint={"save_steps": 2}, report_to="tensorboard")
    FluxTrainer(resumed, show_progress=False).fit(prompts=preference_records, resume=True)
    output_dir = Path(resumed.output_dir)
    assert [path.name for path in (output_dir / "runs").iterdir()] == [output_dir.name]  # one run: the run_name
    accumulator = EventAccumulator(str(output_dir / "runs" / output_dir.name))
    accumulator.Reload()
    loss_events = accumulator.Scalars("train/loss")
    assert [event.step for event in loss_events] == [1, 2, 3, 4, 5, 6]  # each once, the interrupted 5 purged
    rows = metrics_jsonl(output_dir)
    assert [event.value for event in loss_events] == pytest.approx([row["loss"] for row in rows], rel=1e-6)


def _tracker_config(tmp_path, report_to):
    return FluxConfig.from_dict(
        {"model_path": "org/model", "output_dir": str(tmp_path / "out"), "algorithm": {"name": "dpo"}}
    ).model_copy(update={"report_to": report_to})


class _Resumed:
    """A RunContext resuming from a checkpoint, as far as the trackers read it."""

    class resume:  # noqa: N801 - the attribute the trackers read
        step = 4


def test_wandb_and_mlflow_continue_the_same_run_across_resume(tmp_path, monkeypatch):
    import os

    from flux_core.report.trackers import continued_tracker_runs

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    config = _tracker_config(tmp_path, ["wandb", "mlflow"])
    with continued_tracker_runs(config, run=None) as first:
        assert os.environ["WANDB_RUN_ID"] == first["wandb"] and os.environ["WANDB_RESUME"] == "allow"
        assert "MLFLOW_RUN_ID" not in os.environ  # a fresh run: MLflow picks the id
        first["mlflow"] = "mlflow-run-1"  # as mlflow_run_recorder keeps it once MLflow started
        from flux_core.report.trackers import save_tracker_run_ids

        save_tracker_run_ids(config, first)
    assert "WANDB_RUN_ID" not in os.environ  # restored after training: no leak into the next run in this process
    with continued_tracker_runs(config, run=_Resumed()) as resumed:
        assert os.environ["WANDB_RUN_ID"] == first["wandb"]
        assert os.environ["MLFLOW_RUN_ID"] == "mlflow-run-1"
    assert resumed == first
    with continued_tracker_runs(config, run=None) as fresh:  # started over: a new wandb run
        assert fresh["wandb"] != first["wandb"]


def test_mlflow_run_recorder_keeps_the_id_mlflow_started(tmp_path, monkeypatch):
    import sys
    import types

    from flux_core.report.trackers import mlflow_run_recorder, tracker_run_ids

    config = _tracker_config(tmp_path, ["mlflow"])
    assert mlflow_run_recorder(_tracker_config(tmp_path, ["tensorboard"]), {}) is None
    ids: dict[str, str] = {}
    recorder = mlflow_run_recorder(config, ids)
    fake = types.ModuleType("mlflow")  # mlflow as transformers' integration left it: a run started
    fake.active_run = lambda: types.SimpleNamespace(info=types.SimpleNamespace(run_id="abc123"))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    recorder.on_train_begin(None, types.SimpleNamespace(is_world_process_zero=True), None)
    assert ids == {"mlflow": "abc123"} and tracker_run_ids(config, _Resumed()) == {"mlflow": "abc123"}


def test_ppo_trackers_resume_wandb_and_mlflow_runs(tmp_path, monkeypatch):
    import accelerate.tracking

    from flux_core.report import trackers

    made = []

    class Fake:
        def __init__(self, *args, **kwargs):
            made.append((type(self).__name__, kwargs))
            self.active_run = None

        def start(self):
            if type(self).__name__ == "MLflowTracker":
                import types

                self.active_run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="mlflow-7"))

        def store_init_configuration(self, settings):
            pass

    monkeypatch.setattr(accelerate.tracking, "WandBTracker", type("WandBTracker", (Fake,), {}))
    monkeypatch.setattr(accelerate.tracking, "MLflowTracker", type("MLflowTracker", (Fake,), {}))
    monkeypatch.setattr(trackers, "check_trackers", lambda names: list(names))
    config = _tracker_config(tmp_path, ["wandb", "mlflow"])
    trackers.StepTrackers(config, run=None)
    trackers.StepTrackers(config, run=_Resumed())
    (_, wandb_first), (_, mlflow_first), (_, wandb_again), (_, mlflow_again) = made
    assert wandb_again["id"] == wandb_first["id"] and wandb_again["resume"] == "allow"
    assert mlflow_first["run_id"] is None and mlflow_again["run_id"] == "mlflow-7"
