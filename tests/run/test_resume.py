"""Resume and preemption: an interrupted run (SIGTERM, SIGKILL), resumed, continues as if never interrupted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from resume_helpers import (
    BIN,
    SIGINT,
    SIGKILL,
    SIGTERM,
    PausedRun,
    loads,
    max_weight_diff,
    metrics,
    prompts_file,
    write_config,
)

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.run.resume import ResumeError, check_same_config
from flux_core.trainer import FluxTrainer

# Per-step losses after the resume point, resumed vs uninterrupted (CPU, one thread).
TOLERANCE = {"dpo": {"abs": 1e-5}, "grpo": {"abs": 1e-5}, "ppo": {"rel": 1e-2, "abs": 1e-6}}
RESUME_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "ppo_state", "flux_state.json"}


def data_for(algorithm: str, tmp_path: Path, preferences_file: Path) -> Path:
    return preferences_file if algorithm == "dpo" else prompts_file(tmp_path / "prompts.jsonl")


def uninterrupted(config_path: Path, output: Path):
    """The reference: the same config run in one go (in this process)."""
    config = FluxConfig.from_yaml(config_path, overrides=[f"output_dir={output}"])
    return FluxTrainer(config, show_progress=False).fit()


def hidden_temp_entries(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("algorithm", ["dpo", "grpo", "ppo"])
def test_sigterm_then_kill_9_then_resume_matches_an_uninterrupted_run(
    algorithm, tmp_path, tiny_model_dir, preferences_file
):
    data = data_for(algorithm, tmp_path, preferences_file)
    config = write_config(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "run", algorithm, data)
    output = tmp_path / "run"

    # 1. SIGTERM during step 3, and again while its checkpoint is being written: the step
    #    finishes, checkpoint-3 is written in full (off the save_steps=4 cadence), exit 143.
    first = PausedRun(tmp_path / "first", ["step:3", "save:checkpoint-3"], str(config))
    first.wait("step:3")
    first.signal(SIGTERM)
    first.go("step:3")
    first.wait("save:checkpoint-3")
    first.signal(SIGTERM)  # a second SIGTERM mid-save changes nothing
    first.go("save:checkpoint-3")
    code, _, err = first.finish()
    assert code == 143, err[-3000:]
    assert err.splitlines()[-1] == f"flux: preempted at step 3; resume with: flux train {config} --no-progress --resume"
    assert RESUME_FILES & {p.name for p in (output / "checkpoint-3").iterdir()}
    assert [row["step"] for row in metrics(output)] == [1, 2, 3]
    assert not (output / "best").exists()  # a preemption checkpoint is not a scored save point

    # 2. Resumed, then killed with SIGKILL inside step 7 (checkpoint-4 exists, metrics up to 6).
    second = PausedRun(tmp_path / "second", ["step:7"], str(config), "--resume")
    second.wait("step:7")
    second.signal(SIGKILL)
    _, _, err = second.finish()
    assert f"flux: resuming from {output / 'checkpoint-3'} (step 3)" in err
    assert [row["step"] for row in metrics(output)] == [1, 2, 3, 4, 5, 6]
    for name in ("checkpoint-3", "checkpoint-4", "best"):
        assert loads(output / name), name

    # 3. Resumed to the end through the API (step 2 went through the command line): from
    #    checkpoint-4, steps 5-8.
    resumed_result = FluxTrainer(FluxConfig.from_yaml(config), show_progress=False).fit(resume=True)
    resumed = resumed_result.metric("loss")
    assert [step.step for step in resumed_result.history] == list(range(1, 9))
    assert resumed == [row["loss"] for row in metrics(output)]

    reference = uninterrupted(config, tmp_path / "reference")
    expected = reference.metric("loss")
    assert [row["step"] for row in metrics(output)] == list(range(1, 9))  # each step exactly once
    assert resumed[4:] == pytest.approx(expected[4:], **TOLERANCE[algorithm])
    assert resumed[:4] == pytest.approx(expected[:4], **TOLERANCE[algorithm])
    assert max_weight_diff(output / "final", tmp_path / "reference" / "final") < (1e-5 if algorithm != "ppo" else 1e-3)
    for name in ("best", "final"):  # weights only
        assert not RESUME_FILES & {p.name for p in (output / name).iterdir()}, name
    assert hidden_temp_entries(output) == []


def test_sigint_while_the_preemption_checkpoint_is_written_leaves_no_half_checkpoint(
    tmp_path, tiny_model_dir, preferences_file
):
    config = write_config(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "run", "dpo", preferences_file)
    output = tmp_path / "run"
    run = PausedRun(tmp_path / "events", ["step:5", "save:checkpoint-5"], str(config))
    run.wait("step:5")
    run.signal(SIGTERM)
    run.go("step:5")
    run.wait("save:checkpoint-5")  # checkpoint-5's weights are staged, its state not yet
    run.signal(SIGINT)
    code, _, err = run.finish()
    assert code == 130 and err.splitlines()[-1] == "flux: interrupted", err[-2000:]
    assert not (output / "checkpoint-5").exists()
    assert hidden_temp_entries(output) == []  # the staged directory was removed on the way out
    assert loads(output / "checkpoint-4")

    result = FluxTrainer(FluxConfig.from_yaml(config), show_progress=False).fit(resume=True)
    assert [step.step for step in result.history] == list(range(1, 9))
    assert [row["step"] for row in metrics(output)] == list(range(1, 9))


# ---------------------------------------------------------------------- LoRA, in process


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("algorithm", ["dpo", "ppo"])
def test_a_lora_run_resumes_its_adapter(algorithm, tmp_path, tiny_model_dir, preferences_file):
    data = data_for(algorithm, tmp_path, preferences_file)
    lora = {"lora": {"r": 4, "alpha": 8}, "num_steps": 6, "checkpoint": {"save_steps": 2}}
    config = write_config(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "run", algorithm, data, **lora)
    trainer = FluxTrainer(FluxConfig.from_yaml(config), show_progress=False)

    @trainer.add_step_callback
    def stop_after_step_5(result):  # dies after checkpoint-4, before checkpoint-6
        if result.step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer.fit()
    assert (tmp_path / "run" / "checkpoint-4" / "adapter" / "adapter_model.safetensors").exists()
    resumed = FluxTrainer(FluxConfig.from_yaml(config), show_progress=False).fit(resume=True)
    reference = uninterrupted(config, tmp_path / "reference")
    assert resumed.metric("loss") == pytest.approx(reference.metric("loss"), **TOLERANCE[algorithm])
    assert max_weight_diff(tmp_path / "run" / "final", tmp_path / "reference" / "final") < 1e-5


# ---------------------------------------------------------------------- what resume refuses


def fake_checkpoint(config: FluxConfig, step: int = 2, num_examples: int = 64) -> Path:
    """A checkpoint-N with the files resume reads first (enough to test what it refuses)."""
    directory = Path(config.output_dir) / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "flux_config.yaml").write_text(config.to_yaml())
    state = {"step": step, "num_examples": num_examples, "resume_files": []}
    (directory / "flux_state.json").write_text(json.dumps(state))
    return directory


@pytest.fixture
def no_model_loads(monkeypatch):
    import flux_dpo.runner

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(flux_dpo.runner, "load_model", refuse)


def test_resuming_with_a_changed_config_is_refused_naming_the_keys(dpo_config, preference_records, no_model_loads):
    checkpoint = fake_checkpoint(dpo_config(num_steps=4))
    changed = dpo_config({"beta": 0.2}, num_steps=4, learning_rate=1e-3)
    with pytest.raises(ConfigError) as error:
        FluxTrainer(changed, show_progress=False).fit(prompts=preference_records, resume=True)
    message = str(error.value)
    assert message.startswith(f"cannot resume {checkpoint} with a changed config: ")
    assert "algorithm.beta (0.1 -> 0.2), learning_rate (0.0005 -> 0.001)" in message and "\n" not in message
    # num_steps, checkpoint.save_steps (and where the run lives) may change
    check_same_config(checkpoint, dpo_config(num_steps=40, checkpoint={"save_steps": 5}, output_dir="/elsewhere"))


def test_resuming_on_other_training_data_is_refused(dpo_config, preference_records, no_model_loads):
    fake_checkpoint(dpo_config(num_steps=4), num_examples=10)
    with pytest.raises(ResumeError, match="the training data has 64 examples, its run had 10"):
        FluxTrainer(dpo_config(num_steps=4), show_progress=False).fit(prompts=preference_records, resume=True)


def test_resume_needs_a_checkpoint_n(dpo_config, preference_records, tmp_path, no_model_loads):
    config = dpo_config(num_steps=4)
    best = Path(config.output_dir) / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    trainer = FluxTrainer(config, show_progress=False)
    with pytest.raises(ResumeError, match=r"best: weights only \(no flux_state.json\); resume from a checkpoint-N"):
        trainer.fit(prompts=preference_records, resume=best)
    with pytest.raises(ResumeError, match="checkpoint directory not found"):
        trainer.fit(prompts=preference_records, resume=tmp_path / "nope")


def test_resume_with_nothing_to_resume_yet_starts_at_step_1(dpo_config, preference_records):
    config = dpo_config(num_steps=2)
    Path(config.output_dir).mkdir(parents=True)
    (Path(config.output_dir) / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # killed before a checkpoint
    with pytest.warns(UserWarning, match="no checkpoint in .* yet; starting at step 1"):
        result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records, resume=True)
    assert [row["step"] for row in metrics(Path(config.output_dir))] == [1, 2]
    assert math.isclose(result.history[0].metrics["loss"], math.log(2), abs_tol=1e-4)


def test_trl_resume_from_checkpoint_is_refused_with_a_pointer_to_resume(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text(
        yaml.safe_dump({"model_path": "m", "algorithm": {"name": "dpo"}, "trl": {"resume_from_checkpoint": "x"}})
    )
    with pytest.raises(ConfigError, match=r"trl.resume_from_checkpoint: .*flux train CONFIG --resume"):
        FluxConfig.from_yaml(path)


# ---------------------------------------------------------------------- torchrun


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_under_torchrun_every_rank_stops_at_the_same_step_and_the_run_resumes(
    tmp_path, tiny_model_dir, preferences_file
):
    """Also the check that 2 processes train what 1 does with the same global batch (losses within 1e-4), with
    eval at save points, a collective, giving the same held-out loss; only the main process prints."""
    # batch_size is per process: 2 x 4 here is the reference's 8
    config = write_config(
        tmp_path / "run.yaml",
        tiny_model_dir,
        tmp_path / "run",
        "dpo",
        preferences_file,
        batch_size=4,
        eval_data=str(preferences_file),
    )
    output = tmp_path / "run"

    def torchrun() -> list[str]:
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]

    # SIGTERM to torchrun (it passes it to both ranks) while rank 0 is paused inside step 3's
    # logging and rank 1 waits for it inside step 4: both ranks must agree to stop after step 4.
    run = PausedRun(tmp_path / "first", ["step:3"], str(config), launcher=torchrun())
    run.wait("step:3")
    run.signal(SIGTERM)
    run.go("step:3")
    _, _, err = run.finish()
    assert err.count("flux: preempted at step 4; resume with: ") == 1, err[-3000:]  # printed by rank 0 only
    assert [row["step"] for row in metrics(output)] == [1, 2, 3, 4]
    assert loads(output / "checkpoint-4")

    resumed = PausedRun(tmp_path / "second", [], str(config), "--resume", launcher=torchrun())
    code, out, err = resumed.finish()
    assert code == 0, err[-3000:]
    assert out.count("flux: trained 8 steps") == 1  # only the main process prints
    reference = FluxConfig.from_yaml(config, overrides=[f"output_dir={tmp_path / 'reference'}", "batch_size=8"])
    expected = FluxTrainer(reference, show_progress=False).fit()
    rows = metrics(output)
    assert [row["step"] for row in rows] == list(range(1, 9))  # one metrics line per step, not one per process
    assert [row["loss"] for row in rows] == pytest.approx(expected.metric("loss"), abs=1e-4)
    evaluated = {row["step"]: row["eval_loss"] for row in rows if "eval_loss" in row}
    reference_eval = {r.step: r.metrics["eval_loss"] for r in expected.history if "eval_loss" in r.metrics}
    assert list(evaluated) == list(reference_eval) == [4, 8]  # the save points
    assert list(evaluated.values()) == pytest.approx(list(reference_eval.values()), abs=1e-4)
