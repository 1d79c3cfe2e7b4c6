"""num_epochs: a run's length in optimizer steps is computed from the training data (flux_core.run.steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from make_preferences import make_pairs

from flux_core.config import FluxConfig
from flux_core.run.steps import resolved_num_steps
from flux_core.trainer import FluxTrainer


def epoch_config(**top) -> FluxConfig:
    return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}, **top})


def test_num_steps_is_the_run_length_when_num_epochs_is_not_set():
    assert resolved_num_steps(epoch_config(), num_examples=10) == 1000
    assert resolved_num_steps(epoch_config(num_steps=7), num_examples=10) == 7


@pytest.mark.parametrize(
    ("epochs", "rows", "batch", "trl", "world_size", "steps"),
    [
        (3, 1000, 8, {}, 1, 375),
        (1, 1001, 8, {}, 1, 126),  # the last, short batch is a step
        (1, 1001, 8, {"dataloader_drop_last": True}, 1, 125),
        (2, 100, 4, {"gradient_accumulation_steps": 3}, 1, 18),  # 25 batches: 9 steps an epoch
        (1, 100, 4, {}, 2, 13),  # 25 batches over 2 processes: 13 each
        (0.5, 24, 8, {}, 1, 2),  # half of 3 steps, rounded up
        (0.1, 240, 8, {}, 1, 3),  # 0.1 x 30 steps: 3, not ceil(3.0000000000000004)
        (0.01, 24, 8, {}, 1, 1),  # at least one step
    ],
)
def test_num_epochs_counts_batches_accumulation_and_processes(epochs, rows, batch, trl, world_size, steps):
    config = epoch_config(num_epochs=epochs, batch_size=batch, trl=trl)
    assert resolved_num_steps(config, rows, world_size) == steps


def test_steps_per_epoch_are_transformers_own_count(tiny_model_dir, tmp_path):
    """Parity: Flux's count equals the max_steps transformers' Trainer derives from num_train_epochs."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cases = [(3, 1000, 8, 1, False), (1, 1001, 8, 1, True), (2, 100, 4, 3, False), (0.5, 24, 8, 1, False)]
    for epochs, rows, batch, accumulation, drop_last in cases:
        args = TrainingArguments(
            output_dir=str(tmp_path),
            num_train_epochs=epochs,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            dataloader_drop_last=drop_last,
            use_cpu=True,
            report_to="none",
        )
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": [[1, 2]] * rows}))
        transformers_steps = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
        trl = {"gradient_accumulation_steps": accumulation, "dataloader_drop_last": drop_last}
        flux_steps = resolved_num_steps(epoch_config(num_epochs=epochs, batch_size=batch, trl=trl), rows)
        assert flux_steps == transformers_steps, (epochs, rows, batch, accumulation, drop_last)


def epoch_run_config(model_dir: Path, output: Path) -> FluxConfig:
    """DPO for 2 epochs of 24 pairs at batch 8: 6 steps, a checkpoint every 2."""
    return FluxConfig.from_dict(
        {
            "model_path": str(model_dir),
            "output_dir": str(output),
            "num_epochs": 2,
            "batch_size": 8,
            "learning_rate": 5e-4,
            "max_length": 96,
            "seed": 0,
            "precision": "fp32",
            "checkpoint": {"save_steps": 2},
            "algorithm": {"name": "dpo"},
        }
    )


def steps_in(output: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_a_dpo_run_of_two_epochs_trains_their_steps_with_an_lr_schedule_over_them(tiny_model_dir, tmp_path, capfd):
    output = tmp_path / "run"
    result = FluxTrainer(epoch_run_config(tiny_model_dir, output), show_progress=False).fit(
        prompts=make_pairs(24, seed=0)
    )
    assert "flux: num_epochs 2 = 6 steps (24 rows, batch_size 8, 3 steps per epoch)" in capfd.readouterr().err
    assert result.steps == 6 and steps_in(output) == [1, 2, 3, 4, 5, 6]
    assert sorted(path.name for path in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # TRL's linear schedule decays over the 6 steps, not over num_steps' default 1000
    assert result.metric("learning_rate") == pytest.approx([5e-4 * (6 - step) / 6 for step in range(6)])
    assert json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())["max_steps"] == 6
    saved = yaml.safe_load((output / "final" / "flux_config.yaml").read_text())
    assert saved["num_epochs"] == 2 and "num_steps" not in saved  # the config as given, and it loads again
    assert FluxConfig.from_yaml(output / "final" / "flux_config.yaml").num_epochs == 2


class Interrupt(Exception):
    pass


def test_an_interrupted_epoch_run_resumes_at_the_next_step_and_matches_an_uninterrupted_one(tiny_model_dir, tmp_path):
    pairs = make_pairs(24, seed=0)
    output = tmp_path / "run"
    trainer = FluxTrainer(epoch_run_config(tiny_model_dir, output), show_progress=False)

    @trainer.add_step_callback
    def stop_after_step_5(result):  # dies after checkpoint-4, before checkpoint-6
        if result.step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer.fit(prompts=pairs)
    resumed_steps = []
    trainer = FluxTrainer(epoch_run_config(tiny_model_dir, output), show_progress=False)
    trainer.add_step_callback(lambda result: resumed_steps.append(result.step))
    resumed = trainer.fit(prompts=pairs, resume=True)
    assert resumed_steps == [5, 6] and steps_in(output) == [1, 2, 3, 4, 5, 6]

    reference = FluxTrainer(epoch_run_config(tiny_model_dir, tmp_path / "reference"), show_progress=False).fit(
        prompts=pairs
    )
    assert resumed.metric("loss") == pytest.approx(reference.metric("loss"), abs=1e-5)
    assert resumed.metric("learning_rate") == pytest.approx(reference.metric("learning_rate"))
    assert math.isclose(resumed.final_loss, reference.final_loss, abs_tol=1e-5)
