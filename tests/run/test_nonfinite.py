"""NaN/Inf losses, gradient norms and learning rates stop the run (or skip the step) and never reach a checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakes import FakeConfig
from safetensors.torch import load_file

from flux_core.run.checkpoint import CheckpointManager
from flux_core.run.nonfinite import NonFiniteError, json_safe
from flux_core.trainer import FluxTrainer


def nan_loss_plugin(nan_calls):
    """A DPO loss (sigmoid) that returns NaN on the given 1-based calls (one call per training step)."""
    from flux_core import hookimpl

    calls = []

    def sometimes_nan(inputs, *, beta, label_smoothing):
        import torch.nn.functional as F

        calls.append(1)
        per_example = -F.logsigmoid(beta * (inputs.chosen_logratios - inputs.rejected_logratios))
        return per_example * float("nan") if len(calls) in nan_calls else per_example

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("sometimes_nan", sometimes_nan, algorithm="dpo")

    return Plugin()


def metrics_rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


# ---------------------------------------------------------------------- stop (the default)


def test_a_nan_loss_stops_the_run_and_no_checkpoint_holds_it(dpo_config, preference_records, register_plugin):
    register_plugin(nan_loss_plugin({3}), name="test-nan")
    config = dpo_config({"loss": "sometimes_nan"}, num_steps=5, checkpoint={"save_steps": 1})
    with pytest.raises(NonFiniteError, match=r"^step 3: loss is nan; stopped before the optimizer step"):
        FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    output = Path(config.output_dir)
    assert sorted(p.name for p in output.iterdir() if not p.name.startswith(".")) == [
        "best",
        "checkpoint-1",
        "checkpoint-2",
        "metrics.jsonl",
    ]
    assert [row["step"] for row in metrics_rows(output)] == [1, 2]
    for name in ("checkpoint-1", "checkpoint-2", "best"):
        assert all(torch.isfinite(t).all() for t in weights(output / name).values())


NAN_LOSS_SCRIPT = """
import sys
from flux_core.cli import main
from flux_core.plugins import get_plugin_manager
from flux_core.registry import reset_registry
sys.path[:0] = sys.argv[1].split(",")  # this test's folder, and tests/ for the helper modules it imports
from test_nonfinite import nan_loss_plugin
get_plugin_manager().register(nan_loss_plugin({2}), name="test-nan")
reset_registry()
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "learning_rate, loss, expected",
    [
        # (an infinite learning_rate in a config file is refused when it loads: tests/test_bad_input.py)
        ("5.0e-4", "sometimes_nan", "flux: error: step 2: loss is nan; stopped before the optimizer step"),
    ],
)
def test_flux_train_exits_1_naming_the_step_and_the_metric(
    tmp_path, tiny_model_dir, preferences_file, learning_rate, loss, expected
):
    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'out'}\nnum_steps: 3\nbatch_size: 4\n"
        f"learning_rate: {learning_rate}\nmax_length: 96\nalgorithm: {{name: dpo, loss: {loss}}}\n"
        "checkpoint: {save_steps: 1}\n"
    )
    args = ["train", str(config), "--data", str(preferences_file), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", NAN_LOSS_SCRIPT, f"{Path(__file__).parent},{Path(__file__).parents[1]}", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    for checkpoint in (tmp_path / "out").glob("checkpoint-*"):  # only the steps before the bad one
        assert all(torch.isfinite(t).all() for t in weights(checkpoint).values())


def test_grpo_and_ppo_stop_on_an_infinite_learning_rate_before_the_first_update(tiny_model_dir, tmp_path):
    from make_prompts import make_prompts

    from flux_core.config import FluxConfig

    common = {"model_path": str(tiny_model_dir), "num_steps": 2, "batch_size": 4}
    rewards = [{"name": "pattern_fraction", "kwargs": {"pattern": "[eE]"}}]
    for name, algorithm in [
        ("grpo", {"num_generations": 4, "max_completion_length": 8, "rewards": rewards}),
        ("ppo", {"num_generations": 2, "max_completion_length": 8, "rewards": rewards, "num_minibatches": 1}),
    ]:
        config = FluxConfig.from_dict(
            {**common, "output_dir": str(tmp_path / name), "algorithm": {"name": name, **algorithm}}
        )
        # A config refuses inf when it loads; model_copy(update=...) skips validation, as code building one might
        config = config.model_copy(update={"learning_rate": math.inf})
        with pytest.raises(NonFiniteError, match=r"^step 1: learning_rate is inf"):
            FluxTrainer(config, show_progress=False).fit(prompts=make_prompts(8, seed=0))
        assert not (tmp_path / name / "final").exists()


# ---------------------------------------------------------------------- skip


def test_skip_drops_that_optimizer_step_and_the_run_goes_on(dpo_config, preference_records, register_plugin):
    register_plugin(nan_loss_plugin({3}), name="test-nan")
    config = dpo_config({"loss": "sometimes_nan"}, num_steps=5, checkpoint={"save_steps": 1}, on_nonfinite="skip")
    with pytest.warns(UserWarning, match=r"step 3: loss is nan; the optimizer step was skipped \(1 of at most 10\)"):
        result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    output = Path(config.output_dir)

    rows = metrics_rows(output)  # valid JSON: NaN is written as null
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    assert rows[2]["loss"] is None and rows[2]["grad_norm"] is None
    assert [row["skipped_steps"] for row in rows] == [0, 0, 1, 1, 1]
    assert math.isnan(result.history[2].metrics["loss"])  # NaN in memory too, never 0.0
    assert all(math.isfinite(row["loss"]) for row in rows[3:])  # the NaN does not leak into later steps
    # the skipped step changed no weight; the next one did
    before, skipped, after = (weights(output / f"checkpoint-{n}") for n in (2, 3, 4))
    assert all(torch.equal(before[key], skipped[key]) for key in before)
    assert any(not torch.equal(skipped[key], after[key]) for key in before)
    best = json.loads((output / "best" / "flux_checkpoint.json").read_text())
    assert math.isfinite(best["score"])


def test_skip_stops_after_more_than_max_skipped_steps(dpo_config, preference_records, register_plugin):
    register_plugin(nan_loss_plugin({2, 3, 4}), name="test-nan")
    config = dpo_config({"loss": "sometimes_nan"}, num_steps=6, on_nonfinite="skip", max_skipped_steps=2)
    with (
        pytest.warns(UserWarning, match="skipped"),
        pytest.raises(NonFiniteError, match=r"^step 4: loss is nan; 3 steps skipped, more than max_skipped_steps: 2"),
    ):
        FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    assert not (Path(config.output_dir) / "final").exists()


# ---------------------------------------------------------------------- best/ and JSON


class FakeModel:
    def __init__(self, tag: str, value: float = 1.0):
        self.tag, self.value = tag, value

    def named_parameters(self):
        return [("w", torch.tensor([self.value]))]

    def save_pretrained(self, directory):
        (Path(directory) / "config.json").write_text(json.dumps({"tag": self.tag}))


class FakeTokenizer:
    def save_pretrained(self, directory):
        (Path(directory) / "tokenizer.json").write_text("{}")


@pytest.fixture
def plain_saves(monkeypatch):
    from flux_core.run import checkpoint

    monkeypatch.setattr(
        checkpoint,
        "save_model",
        lambda model, tok, d, weights=None: (model.save_pretrained(d), tok.save_pretrained(d)),
    )


def test_best_never_picks_a_nan_score_and_the_average_ignores_nan_losses(tmp_path, plain_saves):
    scores = iter([2.0, float("nan"), float("-inf")])
    manager = CheckpointManager(tmp_path, FakeConfig(), FakeTokenizer(), save_steps=1, evaluate=lambda: next(scores))
    for step in (1, 2, 3):
        manager.on_step(step, 1.0, FakeModel(f"step{step}"))
    best = json.loads((tmp_path / "best" / "flux_checkpoint.json").read_text())
    assert best["step"] == 1 and best["score"] == 2.0
    meta = (tmp_path / "checkpoint-2" / "flux_checkpoint.json").read_text()
    assert json.loads(meta)["score"] is None and "NaN" not in meta  # valid JSON

    smoothed = CheckpointManager(tmp_path / "ema", FakeConfig(), FakeTokenizer(), save_steps=3)
    for step, loss in enumerate([1.0, float("nan"), 1.0], start=1):
        smoothed.on_step(step, loss, FakeModel(f"step{step}"))
    assert json.loads((tmp_path / "ema" / "best" / "flux_checkpoint.json").read_text())["score"] == pytest.approx(1.0)


def test_a_model_with_a_non_finite_weight_is_never_written(tmp_path, plain_saves):
    manager = CheckpointManager(tmp_path, FakeConfig(), FakeTokenizer(), save_steps=1)
    manager.on_step(1, 1.0, FakeModel("good"))
    with pytest.raises(NonFiniteError, match="step 2: weight w is not finite; checkpoint-2 was not written"):
        manager.on_step(2, 1.0, FakeModel("bad", value=float("inf")))
    with pytest.raises(NonFiniteError, match="final was not written"):
        manager.finalize(2, FakeModel("bad", value=float("nan")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "checkpoint-1"]


def test_json_safe_writes_non_finite_numbers_as_null():
    assert json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"}) == {"a": None, "b": [1.0, None], "c": "x"}


@pytest.mark.parametrize(
    "bad,expected",
    [
        ([1.0, float("nan")], "1.weight"),
        ([float("inf"), 1.0], "1.weight"),
        ([float("inf"), float("-inf")], "1.weight"),  # they cancel to NaN in a sum: still found
        ([60000.0, 60000.0], None),  # finite half-precision values whose half-precision sum would overflow
    ],
)
def test_nonfinite_parameter_names_the_first_bad_weight_and_nothing_finite(bad, expected):
    from flux_core.run.nonfinite import nonfinite_parameter

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1, bias=False)).half()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([bad], dtype=torch.float16))
    assert nonfinite_parameter(model) == expected
