"""`flux plot` and the end-of-run diagnostics: the tutorial's warning signs, read from metrics.jsonl."""

import json
import math

import pytest

from flux_core.cli import main
from flux_core.report.diagnostics import diagnose
from flux_core.report.plot import plot_run, run_figure, smoothed, smoothing_weight


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


def write_run(directory, rows, checkpoints=(10, 20), best=20, algorithm=None):
    """A run directory as Flux leaves it; ``algorithm``: saved in best/'s config, as every checkpoint's is."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for step in checkpoints:
        (directory / f"checkpoint-{step}").mkdir()
    (directory / "best").mkdir()
    (directory / "best" / "flux_checkpoint.json").write_text(json.dumps({"step": best, "score": 0.1}))
    if algorithm is not None:
        (directory / "best" / "flux_config.yaml").write_text(f"model_path: m\nalgorithm:\n  name: {algorithm}\n")
    return directory


def sft_rows(steps=30):
    return [
        {"step": s, "loss": 2.0 - s / 30, "mean_token_accuracy": s / 40, "entropy": 3.0, "grad_norm": 1.0}
        for s in range(1, steps + 1)
    ]


def reward_model_rows(steps=30, save_steps=10):
    rows = [
        {
            "step": s,
            "loss": 0.69 - s / 100,
            "accuracy": 0.5 + s / 100,
            "reward_margin": s / 10,
            "mean_reward": 0.1,
            "min_reward": -1.0,
            "max_reward": 1.0,
        }
        for s in range(1, steps + 1)
    ]
    for row in rows[save_steps - 1 :: save_steps]:  # held-out metrics join the save points' steps
        row.update(eval_loss=row["loss"] + 0.05, eval_accuracy=row["accuracy"] - 0.1, eval_reward_margin=1.0)
    return rows


def panel_texts(figure) -> list[tuple[str, str]]:
    """(title, y label) of each panel of a figure."""
    return [(axis.get_title(), axis.get_ylabel()) for axis in figure.axes]


def legend_labels(axis) -> list[str]:
    return [text.get_text() for text in axis.get_legend().get_texts()]


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


def test_flux_plot_skips_unreadable_lines_with_one_warning_and_draws_the_rest(tmp_path, capsys):
    run = write_run(tmp_path / "run", dpo_rows())
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    steps = len(lines)
    lines[1] = json.dumps({"loss": 0.5})  # no step
    lines.insert(3, "garbage{")
    metrics.write_text("\n".join(lines) + "\n" + lines[-1][:12] + "\n")  # a last line cut off by a kill
    assert main(["plot", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"flux: plot: {run / 'metrics.png'}"
    assert err.splitlines()[0] == (
        f"flux: warning: {metrics}:2: not a JSON object with an integer 'step' (and 2 more lines); skipped, "
        f"read the other {steps - 1} steps"
    )
    assert (run / "metrics.png").stat().st_size > 0


def test_flux_plot_on_a_directory_without_metrics_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"flux: error: {tmp_path}: no metrics.jsonl (is this a Flux output_dir?)\n"


def test_the_smoothed_line_is_a_debiased_moving_average_and_keeps_gaps():
    # by hand, weight 0.5: [0, 0, 0.5 * 1 / (1 - 0.5**3), 0.75 / (1 - 0.5**4)]
    assert smoothed([0.0, 0.0, 1.0, 1.0], weight=0.5) == pytest.approx([0.0, 0.0, 4 / 7, 0.8], abs=1e-12)
    # debiased: a constant series is that constant from the first point on (no ramp up from zero)
    assert smoothed([2.5] * 300) == pytest.approx([2.5] * 300, rel=1e-12)
    assert smoothed([1.0, 1.0, None, 1.0]) == [1.0, 1.0, None, 1.0]


def test_the_smoothing_window_is_five_percent_of_the_run_and_at_least_three_steps():
    assert smoothing_weight(12) == smoothing_weight(30) == pytest.approx(0.5)  # span 3: 1 - 2 / (3 + 1)
    assert smoothing_weight(300) == pytest.approx(1 - 2 / 16)  # span 15 (was 0.967: an 80-step lag)


@pytest.mark.parametrize("steps", [60, 300, 1000, 5000])
def test_the_smoothed_line_reaches_a_step_change_within_a_tenth_of_the_run(steps):
    half = steps // 2
    line = smoothed([0.0] * half + [1.0] * (steps - half))
    reached = next(step for step in range(half, steps) if line[step] >= 0.95)
    assert reached - half <= steps // 10
    assert line[half] < 0.95  # and it does smooth: one point does not move it all the way


def test_plot_run_returns_the_path(tmp_path):
    assert plot_run(write_run(tmp_path / "run", online_rows())) == tmp_path / "run" / "metrics.png"


def test_sft_is_drawn_with_its_own_panels_loss_first_and_no_reward(tmp_path):
    figure = run_figure(write_run(tmp_path / "my-sft", sft_rows(), algorithm="sft"))
    assert [title for title, _ in panel_texts(figure)] == ["loss", "token accuracy", "entropy", "gradient norm"]
    assert all(label for _, label in panel_texts(figure))  # every y axis says what it measures
    assert figure.get_suptitle() == "my-sft: sft (30 steps)"
    assert not [text for axis in figure.axes for text in axis.texts]  # no "not recorded" panel


def test_the_reward_model_plot_has_no_empty_panel_and_joins_its_eval_points(tmp_path):
    figure = run_figure(write_run(tmp_path / "rm", reward_model_rows(), algorithm="reward_model"))
    assert [title for title, _ in panel_texts(figure)] == ["loss", "accuracy", "reward margin", "rewards"]
    for axis in figure.axes:  # each panel draws a metric, named in its legend (not only the checkpoint lines)
        assert set(legend_labels(axis)) - {"checkpoint", "best (step 20)"}, axis.get_title()
    loss_axis = figure.axes[0]
    eval_line = next(line for line in loss_axis.get_lines() if line.get_label() == "eval_loss")
    assert list(eval_line.get_xdata()) == [10, 20, 30]  # the save points, joined (not gaps)


def test_legend_names_checkpoints_and_best_and_the_title_names_run_and_algorithm(tmp_path):
    figure = run_figure(write_run(tmp_path / "run-7", dpo_rows(), checkpoints=(10, 20), best=20, algorithm="dpo"))
    assert figure.get_suptitle() == "run-7: dpo (30 steps)"
    assert [title for title, _ in panel_texts(figure)] == [
        "loss",
        "reward margin",
        "chosen vs rejected reward",
        "accuracy",
    ]
    for axis in figure.axes:
        labels = legend_labels(axis)
        assert labels.count("checkpoint") == 1 and "best (step 20)" in labels, labels


def test_before_any_checkpoint_the_panels_come_from_the_metrics_and_unrecorded_ones_are_left_out(tmp_path):
    dpo = run_figure(write_run(tmp_path / "dpo", dpo_rows(), checkpoints=(), best=None))
    assert [axis.get_title() for axis in dpo.axes][:2] == ["loss", "reward margin"]
    assert dpo.get_suptitle() == "dpo (30 steps)"  # no saved config: the algorithm is not named
    no_kl = [{key: value for key, value in row.items() if key != "kl"} for row in online_rows()]
    grpo = run_figure(write_run(tmp_path / "grpo", no_kl, algorithm="grpo"))  # beta 0: TRL logs no KL
    assert [axis.get_title() for axis in grpo.axes] == ["reward", "entropy", "completion length"]
    losses_only = run_figure(write_run(tmp_path / "x", [{"step": s, "loss": 1.0} for s in range(1, 5)], algorithm="x"))
    assert [axis.get_title() for axis in losses_only.axes] == ["loss"]  # an algorithm not installed: what it has


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


def test_the_plot_helper_process_draws_the_picture_says_what_went_wrong_and_stops(tmp_path):
    from PIL import Image

    from flux_core.errors import FluxError
    from flux_core.report.background import PlotHelper

    run = write_run(tmp_path / "run", dpo_rows(), algorithm="dpo")
    assert PlotHelper().draw(run) == run / "metrics.png"
    assert Image.open(run / "metrics.png").size == (1200, 800)
    with pytest.raises(FluxError, match=f"^{tmp_path}: no metrics.jsonl"):  # the helper's error, one line
        PlotHelper().draw(tmp_path)
    died = PlotHelper()
    died.process.kill()
    assert died.draw(run, tmp_path / "again.png") == tmp_path / "again.png"  # drawn here instead
    assert (tmp_path / "again.png").exists()
    unused = PlotHelper()  # a failed run never asks: the helper stops
    process = unused.process
    unused.close()
    assert process.poll() is not None
