"""flux eval: held-out scores of a checkpoint, beside another, in a table and eval.json."""

import json
from pathlib import Path

import pytest
from make_preferences import make_pairs
from make_prompts import make_prompts

from flux_core.cli import main


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dpo_best_beats_the_base_model_on_held_out_pairs(tmp_path, tiny_model_dir, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", make_pairs(64, seed=0))
    held_out = write_jsonl(tmp_path / "held-out.jsonl", make_pairs(32, seed=1))
    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'run'}\nnum_steps: 30\nbatch_size: 8\n"
        "learning_rate: 5.0e-4\nmax_length: 128\nalgorithm: {name: dpo}\n"
    )
    assert main(["train", str(config), "--data", str(train), "--no-progress"]) == 0
    capsys.readouterr()

    best = tmp_path / "run" / "best"
    assert main(["eval", str(best), "--data", str(held_out), "--compare", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["metric", str(best), str(tiny_model_dir)]
    assert out.strip().endswith(f"flux: eval: {best / 'eval.json'}")
    report = json.loads((best / "eval.json").read_text())
    trained, base = report[str(best)], report[str(tiny_model_dir)]
    assert trained["accuracy"] >= 0.9
    assert trained["accuracy"] > base["accuracy"]
    assert trained["reward_margin"] > 0 and base["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert trained["loss"] < base["loss"] == pytest.approx(0.6931, abs=1e-3)  # the base is its own reference


def test_prompt_data_is_scored_with_rewards(tmp_path, tiny_model_dir, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", make_prompts(6, seed=0))
    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'run'}\n"
        "algorithm: {name: grpo, max_completion_length: 8, rewards: [{name: pattern_fraction, kwargs: {pattern: e}}]}\n"
    )
    out_file = tmp_path / "report.json"
    assert (
        main(["eval", str(tiny_model_dir), "--config", str(config), "--data", str(prompts), "--out", str(out_file)])
        == 0
    )
    report = json.loads(out_file.read_text())[str(tiny_model_dir)]
    assert 0.0 <= report["reward_greedy"] <= 1.0 and 0.0 <= report["reward_sampled"] <= 1.0
    assert len(report["samples"]) == 3 and all("completion" in sample for sample in report["samples"])
    assert "reward_greedy" in capsys.readouterr().out


def test_a_checkpoint_without_its_config_is_one_line(tmp_path, tiny_model_dir, capsys):
    assert main(["eval", str(tiny_model_dir), "--data", str(tmp_path / "x.jsonl")]) == 1
    assert capsys.readouterr().err == (
        f"flux: error: {tiny_model_dir}: no flux_config.yaml (not written by Flux); pass the run's config with --config\n"
    )
