"""PPO with num_epochs: an epoch is one pass over the prompts, batch_size of them per step."""

from __future__ import annotations

from collections import Counter

import pytest
from fakes import PromptsSeen

from flux_core.config import FluxConfig
from flux_core.trainer import FluxTrainer


def test_one_epoch_covers_every_prompt_and_the_lr_decays_over_its_steps(tiny_model_dir, tmp_path, register_plugin):
    recorder = register_plugin(PromptsSeen())
    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "out"),
            "num_epochs": 1,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "seed": 0,
            "algorithm": {
                "name": "ppo",
                "rewards": [{"name": "prompts_seen"}],
                "num_generations": 1,
                "max_completion_length": 4,
                "num_minibatches": 1,
                "ppo_epochs": 1,
            },
        }
    )
    prompts = [{"prompt": f"Tell me about number {index}."} for index in range(6)]
    result = FluxTrainer(config, show_progress=False).fit(prompts=prompts)
    assert [step.step for step in result.history] == [1, 2]  # ceil(6 prompts / 4 a step)
    assert result.metric("learning_rate") == pytest.approx([1e-3, 5e-4])  # linear decay over 2 steps, not 1000
    counts = Counter(recorder.prompts)
    assert set(counts) == {prompt["prompt"] for prompt in prompts}  # the 2 extra rows of step 2 start epoch 2
