"""GRPO with num_epochs: an epoch is one pass over the prompts, as TRL's GRPOTrainer makes it."""

from __future__ import annotations

from collections import Counter

import pytest
from fakes import PromptsSeen
from make_prompts import make_prompts

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.run.steps import resolved_num_steps
from flux_core.trainer import FluxTrainer

E_FRACTION = {"name": "pattern_fraction", "kwargs": {"pattern": "e"}}


def grpo_config(algorithm: dict | None = None, **top) -> FluxConfig:
    data = {
        "model_path": "m",
        "num_epochs": 1,
        "batch_size": 4,
        "algorithm": {"name": "grpo", "num_generations": 2, "rewards": [E_FRACTION], **(algorithm or {})},
        **top,
    }
    return FluxConfig.from_dict(data)


@pytest.mark.parametrize(
    ("algorithm", "trl", "prompts", "steps"),
    [
        ({}, {}, 11, 5),  # 2 prompts a step; the 11th is left over, as TRL's sampler drops it
        ({"num_iterations": 2}, {}, 11, 10),  # each generation batch trains two steps
        ({}, {"gradient_accumulation_steps": 2}, 11, 2),  # 4 prompts a step
        ({}, {"generation_batch_size": 8}, 11, 4),  # 4 prompts a generation, 2 steps each
        ({"num_generations": 4}, {}, 10, 10),  # 1 prompt a step
    ],
)
def test_steps_per_epoch_of_prompts(algorithm, trl, prompts, steps):
    assert resolved_num_steps(grpo_config(algorithm, trl=trl), prompts) == steps


def test_fewer_prompts_than_a_generation_batch_is_one_line():
    with pytest.raises(ConfigError, match=r"^num_epochs: the data has 3 prompts, fewer than one generation batch of 4"):
        resolved_num_steps(grpo_config(trl={"gradient_accumulation_steps": 2}), 3)


def test_steps_per_epoch_are_trls_own_count(tiny_model_dir, tmp_path):
    """Parity: the max_steps TRL's GRPOTrainer derives from num_train_epochs, for the same settings."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = Dataset.from_list(make_prompts(11, seed=0))
    for algorithm, trl in [({}, {}), ({"num_iterations": 2}, {}), ({}, {"gradient_accumulation_steps": 2})]:
        config = grpo_config(algorithm, trl=trl)
        args = GRPOConfig(
            output_dir=str(tmp_path),
            num_train_epochs=1,
            per_device_train_batch_size=config.batch_size,
            num_generations=config.algorithm.num_generations,
            num_iterations=config.algorithm.num_iterations,
            use_cpu=True,
            report_to="none",
            **trl,
        )
        trainer = GRPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=lambda completions, **_: [0.0] * len(completions),
            args=args,
            train_dataset=prompts,
        )
        trl_steps = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
        assert resolved_num_steps(config, len(prompts)) == trl_steps, (algorithm, trl)


def test_one_epoch_trains_each_prompt_once_with_its_group(tiny_model_dir, tmp_path, register_plugin, capfd):
    recorder = register_plugin(PromptsSeen())
    config = grpo_config(
        {"max_completion_length": 4, "rewards": [{"name": "prompts_seen"}]},
        model_path=str(tiny_model_dir),
        output_dir=str(tmp_path / "out"),
    )
    prompts = [{"prompt": f"Tell me about number {index}."} for index in range(11)]  # all different
    result = FluxTrainer(config, show_progress=False).fit(prompts=prompts)
    assert "flux: num_epochs 1 = 5 steps (11 rows, batch_size 4, 5 steps per epoch)" in capfd.readouterr().err
    assert [step.step for step in result.history] == [1, 2, 3, 4, 5]
    counts = Counter(recorder.prompts)
    assert len(counts) == 10 and set(counts.values()) == {2}  # 10 of the 11 prompts, each num_generations times
    assert set(counts) < {prompt["prompt"] for prompt in prompts}
