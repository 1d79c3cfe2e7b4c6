"""``flux train --resume`` on a run that already trained all its steps: one line, exit 0, nothing trained.

One DPO and one GRPO run of 2 steps (a module-scoped fixture, the tiny model) serve every test:
a job script that always passes ``--resume`` must find a finished run finished, and a run killed
while writing ``final/`` must get it from its last ``checkpoint-N``, not train a step past ``num_steps``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from resume_helpers import ALGORITHMS, metrics, prompts_file

from flux_core.cli import main


def digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=["dpo", "grpo"])
def finished_run(request, tiny_model_dir, preferences_file, tmp_path_factory) -> tuple[Path, Path]:
    """(config file, output_dir) of a finished 2-step run with checkpoint-2 written at its last step."""
    algorithm = request.param
    tmp = tmp_path_factory.mktemp(f"finished-{algorithm}")
    data = preferences_file if algorithm == "dpo" else prompts_file(tmp / "prompts.jsonl", count=8)
    settings = {
        "model_path": str(tiny_model_dir),
        "output_dir": str(tmp / "out"),
        "data": str(data),
        "num_steps": 2,
        "batch_size": 4,
        "learning_rate": 5.0e-4,
        "checkpoint": {"save_steps": 2},
        "algorithm": ALGORITHMS[algorithm],
        **({"max_length": 64} if algorithm == "dpo" else {}),
    }
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", str(config), "--no-progress"]) == 0
    return config, tmp / "out"


def resume(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["train", str(config), "--resume", *extra])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err.splitlines()


def test_resume_of_a_finished_run_trains_nothing_and_says_so_in_one_line(finished_run, capsys):
    config, output = finished_run
    final, history = digest(output / "final"), metrics(output)
    code, lines = resume(config, capsys)
    assert code == 0
    assert lines == [
        f"flux: {output} is finished: it trained 2 steps (num_steps 2); nothing to train (final: {output}/final); "
        "raise num_steps to train on"
    ]
    assert digest(output / "final") == final and metrics(output) == history
    assert not (output / "checkpoint-3").exists()


def test_a_run_killed_while_writing_final_gets_it_from_its_last_checkpoint(finished_run, capsys):
    config, output = finished_run
    history = metrics(output)
    shutil.move(output / "final", output / ".final.tmp-999999")  # the half-written final/ a kill leaves
    code, lines = resume(config, capsys)
    assert code == 0 and len(lines) == 1
    assert "copied final/ from checkpoint-2 (a kill cut their writing short); nothing to train" in lines[0]
    assert digest(output / "final") == digest(output / "checkpoint-2")
    assert [row["step"] for row in metrics(output)] == [row["step"] for row in history] == [1, 2]
    assert not (output / ".final.tmp-999999").exists()


def test_a_finished_run_with_a_changed_config_is_refused_as_any_resume(finished_run, capsys):
    config, output = finished_run
    code, lines = resume(config, capsys, "--set", "learning_rate=1e-3")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"flux: error: cannot resume {output}/final with a changed config: learning_rate")
