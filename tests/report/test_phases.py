"""The seconds before the first step say what they are spent on: one `flux: ...` line per phase on stderr."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flux_core.cli import main


@pytest.fixture
def config_file(tmp_path, tiny_model_dir):
    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'run'}\nnum_steps: 2\nbatch_size: 8\n"
        "max_length: 128\nprecision: fp32\nalgorithm: {name: dpo, reference_policy: precompute}\n"
    )
    return config


def flux_train_stderr(config_file: Path, data: Path, **env: str) -> str:
    """``flux train`` as a user runs it (tqdm reads TQDM_DISABLE when it is imported: a process of its own)."""
    environment = {key: value for key, value in os.environ.items() if key != "TQDM_DISABLE"}
    command = [str(Path(sys.executable).with_name("flux")), "train", str(config_file), "--data", str(data)]
    done = subprocess.run(command, env={**environment, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_each_phase_is_one_line_before_the_first_step(config_file, tiny_model_dir, preferences_file):
    err = flux_train_stderr(config_file, preferences_file)
    phases = [
        f"flux: loading data: {preferences_file} (64 rows)\n",
        f"flux: loading model: {tiny_model_dir}\n",
        "flux: tokenizing 64 rows\n",
        "flux: scoring 64 train pairs with the reference model (reference_policy: precompute)\n",
    ]
    where = [err.find(line) for line in phases]
    assert -1 not in where, err
    assert where == sorted(where)  # in the order they happen
    first_step = re.search(r"flux dpo: +\d+%", err)  # the progress bar
    assert first_step is not None and where[-1] < first_step.start(), err


def test_tqdm_disable_silences_the_phase_lines_with_the_progress_bar(config_file, preferences_file):
    err = flux_train_stderr(config_file, preferences_file, TQDM_DISABLE="1")
    assert "flux: loading" not in err and "tokenizing" not in err and "flux dpo:" not in err


def test_no_progress_silences_the_phase_lines(config_file, preferences_file, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the suite sets it: here only --no-progress may silence them
    assert main(["train", str(config_file), "--data", str(preferences_file), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "flux: loading" not in err and "tokenizing" not in err
