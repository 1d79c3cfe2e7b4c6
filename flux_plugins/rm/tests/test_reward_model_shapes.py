"""flux-rm on LLaMA-Factory's preference pairs read without any mapping (ShareGPT pairs, Alpaca pairs)."""

import pytest
from shaped_rows import alpaca_pairs, sharegpt_pairs

from flux_core.trainer import FluxTrainer


@pytest.mark.parametrize("rows", [sharegpt_pairs(16), alpaca_pairs(16)], ids=["sharegpt-pairs", "alpaca-pairs"])
def test_llama_factory_pairs_train_a_reward_model(tiny_model_dir, tmp_path, rows):
    from flux_core.config import FluxConfig

    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": 3,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 256,
            "precision": "fp32",
            "algorithm": {"name": "reward_model"},
        }
    )
    result = FluxTrainer(config, show_progress=False).fit(prompts=rows)

    losses = result.metric("loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
