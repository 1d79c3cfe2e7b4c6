"""`flux train` killed with SIGKILL at random moments, mid-save included, then resumed, again and again."""

from __future__ import annotations

import random
import re
import subprocess
import time
from pathlib import Path

import pytest
from resume_helpers import BIN, env, flux_train, loads, max_weight_diff, metrics, write_config

from flux_core.config import FluxConfig
from flux_core.trainer import FluxTrainer

KILLS = 4
STEPS = 12
STARTED = ("flux: resuming from", "starting at step 1")  # printed once startup cleanup is done


def temp_entries(output: Path) -> set[str]:
    return {p.name for p in output.iterdir() if ".tmp-" in p.name or ".old-" in p.name} if output.exists() else set()


def named_checkpoints(output: Path) -> list[Path]:
    return [p for p in output.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+|best|final", p.name)]


def wait_started(process: subprocess.Popen, stderr: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(line in stderr.read_text() for line in STARTED):
        assert process.poll() is None, stderr.read_text()[-3000:]
        assert time.monotonic() < deadline, "flux train did not start"
        time.sleep(0.02)


def rows(output: Path) -> int:
    return len(metrics(output)) if (output / "metrics.jsonl").exists() else 0


def wait_training(process: subprocess.Popen, output: Path, after: int, timeout: float = 300) -> None:
    """Until the run has trained a step beyond the ``after`` it resumed from."""
    deadline = time.monotonic() + timeout
    while rows(output) <= after and process.poll() is None:
        assert time.monotonic() < deadline, "flux train did not train"
        time.sleep(0.01)


def wait_mid_save(process: subprocess.Popen, output: Path, timeout: float = 20) -> None:
    """Until a checkpoint is being written (a staged .NAME.tmp-PID directory exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if any(name.endswith(f".tmp-{process.pid}") for name in temp_entries(output)):
            return
        time.sleep(0.002)


def test_random_kills_leave_only_loadable_checkpoints_and_resume_always_continues(
    tmp_path, tiny_model_dir, preferences_file
):
    rng = random.Random(20251125)
    output = tmp_path / "run"
    config = write_config(
        tmp_path / "run.yaml",
        tiny_model_dir,
        output,
        "dpo",
        preferences_file,
        num_steps=STEPS,
        checkpoint={"save_steps": 2},
    )
    command = [str(BIN / "flux"), "train", str(config), "--resume", "--no-progress"]
    mid_save_kills, resumed_from = 0, []
    for attempt in range(KILLS):
        left_by_last_kill = temp_entries(output)
        stderr = tmp_path / f"stderr-{attempt}"
        with stderr.open("w") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env())
        wait_started(process, stderr)
        assert not left_by_last_kill & temp_entries(output), "a killed run's temp directory outlived the next start"
        resumed_at = rows(output)  # metrics.jsonl was cut back to the checkpoint's steps
        wait_training(process, output, after=resumed_at)

        if attempt % 2 == 0:  # mid-save: the moment a checkpoint (or best/) is being written
            wait_mid_save(process, output)
        else:  # a seeded random moment some steps on: in a step, its logging or a save
            wait_training(process, output, after=resumed_at + rng.randint(2, 5))
            time.sleep(rng.uniform(0.0, 0.3))
        process.kill()
        process.wait()
        mid_save_kills += any(name.endswith(f".tmp-{process.pid}") for name in temp_entries(output))
        resumed_from.append(resumed_at)

        for checkpoint in named_checkpoints(output):  # never a half-written one under a real name
            assert loads(checkpoint), checkpoint.name
        steps = [row["step"] for row in metrics(output)] if (output / "metrics.jsonl").exists() else []
        assert steps == list(range(1, len(steps) + 1))

    assert mid_save_kills >= 1
    assert any(step > 0 for step in resumed_from)  # later starts continued from a killed run's checkpoint
    finished = flux_train(str(config), "--resume")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert temp_entries(output) == set()
    assert [row["step"] for row in metrics(output)] == list(range(1, STEPS + 1))

    reference = FluxConfig.from_yaml(config, overrides=[f"output_dir={tmp_path / 'reference'}"])
    expected = FluxTrainer(reference, show_progress=False).fit().metric("loss")
    assert [row["loss"] for row in metrics(output)] == pytest.approx(expected, abs=1e-5)
    assert max_weight_diff(output / "final", tmp_path / "reference" / "final") < 1e-5
