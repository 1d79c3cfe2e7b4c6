"""A damaged ``checkpoint-N`` is named before resuming: ``--resume`` falls back to the
previous complete checkpoint with one warning, a named one is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_core.run.integrity import checkpoint_damage
from flux_core.run.layout import HISTORY_FILE, PPO_STATE_DIR, PPO_STATE_FILE, STATE_FILE, checkpoint_name
from flux_core.run.resume import ResumeError, find_resume_point


def write_checkpoint(output_dir: Path, step: int) -> Path:
    """A resumable checkpoint-N as Flux writes one: weights, torch.save'd state, JSON state and history."""
    import torch
    from safetensors.torch import save_file

    path = output_dir / checkpoint_name(step)
    (path / PPO_STATE_DIR).mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"weight": torch.ones(64, 64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64)}}}, path / "optimizer.pt")
    torch.save({"kl_coef": 0.1}, path / PPO_STATE_DIR / PPO_STATE_FILE)
    (path / HISTORY_FILE).write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, step + 1)))
    state = {"step": step, "resume_files": ["optimizer.pt", PPO_STATE_DIR, HISTORY_FILE, STATE_FILE]}
    (path / STATE_FILE).write_text(json.dumps(state, indent=2))
    return path


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    for step in (2, 4):
        write_checkpoint(tmp_path, step)
    return tmp_path


BREAKS = {
    "flux_state.json": (lambda c: truncate(c / STATE_FILE), STATE_FILE + ":"),
    "model.safetensors": (lambda c: truncate(c / "model.safetensors"), "model.safetensors: truncated or corrupt"),
    "optimizer.pt": (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt: truncated or corrupt"),
    "optimizer.pt-missing": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt: missing"),
    "ppo.pt": (lambda c: truncate(c / PPO_STATE_DIR / PPO_STATE_FILE), f"{PPO_STATE_FILE}: truncated or corrupt"),
    "empty-rng-state": (lambda c: (c / "rng_state.pth").write_bytes(b""), "rng_state.pth: empty (0 bytes)"),
    "metrics-garbage": (
        lambda c: (c / HISTORY_FILE).write_text("garbage{\n"),
        f"{HISTORY_FILE}:1: truncated or corrupt",
    ),
    "metrics-no-step": (
        lambda c: (c / HISTORY_FILE).write_text('{"step": 1}\n{"loss": 0.5}\n'),
        f"{HISTORY_FILE}:2: a metrics row without an integer 'step'",
    ),
}


def test_a_whole_checkpoint_has_no_damage(run_dir):
    assert checkpoint_damage(run_dir / checkpoint_name(4)) is None


@pytest.mark.parametrize("name", BREAKS)
def test_resume_falls_back_to_the_previous_checkpoint_with_one_warning(run_dir, name):
    breaks, expected = BREAKS[name]
    breaks(run_dir / checkpoint_name(4))
    with pytest.warns(UserWarning) as caught:
        found = find_resume_point(run_dir, True)
    assert found == run_dir / checkpoint_name(2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(run_dir / checkpoint_name(4)) in message and expected in message
    assert message.endswith(f"resuming from {run_dir / checkpoint_name(2)} instead")


def test_a_named_damaged_checkpoint_is_an_error_naming_the_file_and_the_previous_one(run_dir):
    truncate(run_dir / checkpoint_name(4) / "optimizer.pt")
    with pytest.raises(ResumeError) as error:
        find_resume_point(run_dir, run_dir / checkpoint_name(4))
    message = str(error.value)
    assert str(run_dir / checkpoint_name(4) / "optimizer.pt") + ": truncated or corrupt (" in message
    assert message.endswith(f"resume from {run_dir / checkpoint_name(2)} instead")


def test_every_checkpoint_damaged_is_an_error_naming_the_newest(run_dir):
    truncate(run_dir / checkpoint_name(2) / "model.safetensors")
    truncate(run_dir / checkpoint_name(4) / "optimizer.pt")
    with pytest.raises(ResumeError) as error:
        find_resume_point(run_dir, True)
    message = str(error.value)
    assert str(run_dir / checkpoint_name(4) / "optimizer.pt") in message
    assert "holds no earlier complete checkpoint; start again with --overwrite" in message
