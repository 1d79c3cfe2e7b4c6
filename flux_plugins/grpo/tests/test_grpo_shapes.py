"""flux-grpo on practitioners' data read without any mapping: ShareGPT conversations (the prompt is every turn
before the last assistant turn, roles mapped) and Alpaca rows (the prompt is the instruction, then the input;
``output`` reaches reward functions as a reference answer)."""

import pytest
from shaped_rows import alpaca_rows, question, sharegpt_rows

from flux_core import hookimpl
from flux_core.config import FluxConfig
from flux_core.trainer import FluxTrainer


@pytest.mark.parametrize("shape", ["sharegpt", "alpaca"])
def test_prompts_and_columns_reach_the_rewards(tiny_model_dir, tmp_path, register_plugin, shape):
    calls = []

    def recorded(prompts, completions, **columns):
        calls.append((prompts, columns))
        return [float(len(completion)) for completion in completions]

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register("recorded", recorded)

    register_plugin(Plugin(), name="test-recorded")
    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "algorithm": {
                "name": "grpo",
                "num_generations": 4,
                "max_completion_length": 8,
                "rewards": [{"name": "recorded"}],
            },
        }
    )
    rows = sharegpt_rows(4) if shape == "sharegpt" else alpaca_rows(4)

    result = FluxTrainer(config, show_progress=False).fit(prompts=rows)

    assert result.steps == 2 and all("loss" in step.metrics for step in result.history)
    prompts, columns = calls[0]
    if shape == "sharegpt":
        assert [message["role"] for message in prompts[0]] == ["system", "user", "assistant", "user"]
        assert prompts[0][1]["content"] in {question(index) for index in range(4)}
        assert set(columns) >= {"id", "messages"}
    else:  # each prompt arrives with its own row's output
        prompt_of = {row["output"]: row["instruction"] + (f"\n\n{row['input']}" * bool(row["input"])) for row in rows}
        assert [prompt_of[output] for output in columns["output"]] == prompts
        assert all(prompt.startswith(question(0)[:14]) for prompt in prompts)
