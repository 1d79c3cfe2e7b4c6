"""`flux plot` and the end-of-run diagnostics: the tutorial's warning signs, read from metrics.jsonl."""

import json
import math

import pytest

from flux_core.cli import main
from flux_core.report.diagnostics import diagnose
from flux_core.report.plot import plot_run, smoothed


def dpo_rows(steps=30, loss=lambda s: 0.69 * math.exp(-s / 8), margin=lambda s: s / 5, chosen_gap=1.0):
    return [
        {
            "step": step,
            "loss": loss(step),
            "reward_margin": margin(step),
            "chosen_reward": margin(step) * chosen_gap / 2,
            "rejected_reward": -margin(step) / 2,
            "accuracy": min(1.0, step / 10),
        }
        for step in range(1, steps + 1)
    ]


def online_rows(steps=30, reward=lambda s: 0.1 + s / 50, kl=lambda s: 0.01 * s):
    return [
        {"step": s, "reward": reward(s), "kl": kl(s), "entropy": 2.0, "completion_length": 8.0}
        for s in range(1, steps + 1)
    ]


def write_run(directory, rows, checkpoints=(10, 20), best=20):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for step in checkpoints:
        (directory / f"checkpoint-{step}").mkdir()
    (directory / "best").mkdir()
    (directory / "best" / "flux_checkpoint.json").write_text(json.dumps({"step": best, "score": 0.1}))
    return directory


# ---------------------------------------------------------------------- diagnostics


def test_a_healthy_run_gets_no_warning():
    assert diagnose(dpo_rows()) == []
    assert diagnose(online_rows()) == []


def test_each_warning_sign_of_the_tutorial_is_one_line_with_its_remedy():
    flat = diagnose(dpo_rows(loss=lambda s: 0.6931))
    assert flat == [
        "loss not decreasing (0.6931 → 0.6931 over 30 steps): try beta 0.1 → 0.2, a lower learning rate, "
        "or check that chosen and rejected differ clearly"
    ]
    negative = diagnose(dpo_rows(margin=lambda s: -s / 5))
    assert negative[0] == (
        "reward_margin is negative (-5.5000 at the end): the model may be degrading: raise beta (stronger pull to "
        "the reference), keep a reference model (reference_free: false), or train fewer steps"
    )
    falling = diagnose(dpo_rows(margin=lambda s: 5 - s / 10))
    assert [line.split(":")[0] for line in falling] == ["reward_margin is falling (4.6500 → 2.2500)"]
    not_above = diagnose(dpo_rows(chosen_gap=-1.0))
    assert not_above == [
        "chosen_reward is not above rejected_reward (-2.7500 vs -2.7500 at the end): check data quality "
        "(a clear chosen/rejected distinction), or try beta 0.1 → 0.2"
    ]


def test_online_runs_are_checked_for_a_flat_reward_and_an_exploding_kl():
    assert diagnose(online_rows(reward=lambda s: 0.3)) == [
        "reward is flat (0.3000 → 0.3000 over 30 steps): check that the reward varies between completions, "
        "raise learning_rate or num_generations"
    ]
    exploding = diagnose(online_rows(kl=lambda s: 0.01 * 1.3**s))
    assert len(exploding) == 1 and exploding[0].startswith("KL is exploding")


def test_too_short_a_run_is_not_judged_and_gaps_are_skipped():
    assert diagnose(dpo_rows(steps=5, loss=lambda s: 0.6931)) == []
    rows = dpo_rows()
    rows[3]["loss"] = None  # a non-finite step is written as null
    assert diagnose(rows) == []


# ---------------------------------------------------------------------- plot


@pytest.mark.parametrize("rows", [dpo_rows(), online_rows()], ids=["dpo", "grpo"])
def test_flux_plot_writes_a_1200_by_800_png_and_says_where(tmp_path, capsys, rows):
    from PIL import Image

    run = write_run(tmp_path / "run", rows)
    assert main(["plot", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"flux: plot: {run / 'metrics.png'}"
    assert err == ""  # a healthy run: no warning
    assert Image.open(run / "metrics.png").size == (1200, 800)
    assert main(["plot", str(run), "--out", str(tmp_path / "elsewhere" / "m.png")]) == 0
    assert Image.open(tmp_path / "elsewhere" / "m.png").size == (1200, 800)


def test_flux_plot_prints_the_warning_signs_it_finds(tmp_path, capsys):
    run = write_run(tmp_path / "run", dpo_rows(loss=lambda s: 0.6931))
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().err.startswith("flux: warning: loss not decreasing")


def test_flux_plot_on_a_directory_without_metrics_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"flux: error: {tmp_path}: no metrics.jsonl (is this a Flux output_dir?)\n"


def test_the_smoothed_line_follows_the_points_and_keeps_gaps():
    assert smoothed([1.0, 1.0, None, 1.0]) == [1.0, 1.0, None, 1.0]  # bias correction: no ramp from zero
    rising = smoothed([float(step) for step in range(100)])
    assert rising[-1] < 99 and rising[-1] > 80  # lags a rising series, but not by much


def test_plot_run_returns_the_path(tmp_path):
    assert plot_run(write_run(tmp_path / "run", online_rows())) == tmp_path / "run" / "metrics.png"


# ---------------------------------------------------------------------- end of flux train


def test_flux_train_ends_with_the_plot_and_the_warning_signs(tmp_path, tiny_model_dir, preferences_file, capsys):
    def train(name, learning_rate):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / name}\nnum_steps: 12\nbatch_size: 8\n"
            f"learning_rate: {learning_rate}\nmax_length: 128\nprecision: fp32\nalgorithm: {{name: dpo}}\n"
        )
        assert main(["train", str(config), "--data", str(preferences_file), "--no-progress"]) == 0
        return capsys.readouterr()

    stuck = train("stuck", "1.0e-12")  # learning nothing: the loss stays at ln 2
    assert f"flux: plot: {tmp_path / 'stuck' / 'metrics.png'}" in stuck.out
    assert "flux: warning: loss not decreasing (0.6931 → 0.6931 over 12 steps)" in stuck.err
    learning = train("learning", "5.0e-4")  # the demo's settings
    assert (tmp_path / "learning" / "metrics.png").exists()
    assert "flux: warning" not in learning.err
