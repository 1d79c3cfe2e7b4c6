"""Resuming on other training data is refused (content-true, naming both), unless --allow-data-change."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from resume_helpers import metrics, write_config

from flux_core.cli import main
from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.run.layout import CONFIG_FILE, DATA_STATE_KEY, STATE_FILE, checkpoint_name
from flux_core.run.resume import ResumeError, load_resume_point


def checkpoint_with(tmp_path: Path, config: FluxConfig, data: dict | None) -> Path:
    """A checkpoint-2 holding what resume reads first: its config and state (with ``data`` recorded)."""
    directory = tmp_path / checkpoint_name(2)
    directory.mkdir()
    (directory / CONFIG_FILE).write_text(config.to_yaml())
    state = {"step": 2, "num_examples": 64, "resume_files": [], **({DATA_STATE_KEY: data} if data else {})}
    (directory / STATE_FILE).write_text(json.dumps(state))
    return directory


def dpo(data: str, **overrides) -> FluxConfig:
    return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}, "data": data, **overrides})


def test_the_recorded_fingerprint_decides_and_allow_data_change_overrides_it(tmp_path):
    trained = {"fingerprint": "1111", "sources": "a.jsonl"}
    checkpoint = checkpoint_with(tmp_path, dpo("a.jsonl"), trained)
    other = {"fingerprint": "2222", "sources": "b.jsonl"}
    with pytest.raises(ResumeError) as info:
        load_resume_point(checkpoint, dpo("b.jsonl"), 64, other)
    assert str(info.value) == (
        f"cannot resume {checkpoint}: the training data changed: this run has b.jsonl (fingerprint 2222), its run "
        "trained on a.jsonl (fingerprint 1111); resume with the same data, or allow the change with "
        "--allow-data-change (fit(allow_data_change=True))"
    )
    # the same content under another path: the fingerprint decides, not the spelling of data:
    assert load_resume_point(checkpoint, dpo("moved/a.jsonl"), 64, dict(trained)).step == 2
    # allowed: other data, of another size, with other eval settings; other keys are still checked
    changed = dpo("b.jsonl", eval_fraction=0.1)
    assert load_resume_point(checkpoint, changed, 10, other, allow_data_change=True).step == 2
    with pytest.raises(ConfigError, match=r"changed config: learning_rate"):
        load_resume_point(checkpoint, dpo("b.jsonl", learning_rate=1.0), 64, other, allow_data_change=True)


def test_a_checkpoint_without_a_recorded_fingerprint_still_checks_the_config_and_size(tmp_path):
    checkpoint = checkpoint_with(tmp_path, dpo("a.jsonl"), None)
    data = {"fingerprint": "2222", "sources": "a.jsonl"}
    assert load_resume_point(checkpoint, dpo("a.jsonl"), 64, data).step == 2
    with pytest.raises(ConfigError, match=r"data.path \('a.jsonl' -> 'b.jsonl'\)"):
        load_resume_point(checkpoint, dpo("b.jsonl"), 64, data)
    with pytest.raises(ResumeError, match="the training data has 63 examples, its run had 64"):
        load_resume_point(checkpoint, dpo("a.jsonl"), 63, data)


@pytest.fixture
def train(monkeypatch, capsys):
    """``flux train ARGS`` in this process: (exit status, stderr)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI replaces it; restored after

    def run(*args: str) -> tuple[int, str]:
        status = main(["train", *args, "--no-progress"])
        return status, capsys.readouterr().err

    return run


def test_resume_on_other_data_is_refused_naming_both_unless_allowed(tmp_path, tiny_model_dir, preferences_file, train):
    data, other = tmp_path / "pairs.jsonl", tmp_path / "other.jsonl"
    shutil.copyfile(preferences_file, data)
    swapped = [json.loads(line) for line in data.read_text().splitlines()]
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in swapped]
    other.write_text("".join(json.dumps(row) + "\n" for row in swapped))  # the same number of pairs
    config = write_config(
        tmp_path / "dpo.yaml", tiny_model_dir, tmp_path / "run", "dpo", data, num_steps=2, checkpoint={"save_steps": 2}
    )
    assert train(str(config))[0] == 0
    checkpoint = tmp_path / "run" / checkpoint_name(2)
    recorded = json.loads((checkpoint / STATE_FILE).read_text())[DATA_STATE_KEY]
    assert recorded["sources"] == str(data)

    status, err = train(str(config), "--data", str(other), "--resume", "--set", "num_steps=4")
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"flux: error: cannot resume {checkpoint}: the training data changed: this run has {other} ")
    assert f"its run trained on {data} (fingerprint {recorded['fingerprint']})" in err

    # the file rewritten in place under its old mtime (cp -p, rsync -t): still other data
    before = os.stat(data)
    shutil.copyfile(other, data)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    status, err = train(str(config), "--resume", "--set", "num_steps=4")
    assert status == 1 and "the training data changed" in err

    # the same bytes back, under a new mtime: the same data, the run goes on
    shutil.copyfile(preferences_file, data)
    os.utime(data, (1, 1))
    assert train(str(config), "--resume", "--set", "num_steps=3")[0] == 0
    assert [row["step"] for row in metrics(tmp_path / "run")] == [1, 2, 3]

    status, err = train(str(config), "--data", str(other), "--resume", "--allow-data-change", "--set", "num_steps=4")
    assert status == 0, err
    assert [row["step"] for row in metrics(tmp_path / "run")] == [1, 2, 3, 4]
