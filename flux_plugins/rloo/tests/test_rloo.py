"""flux-rloo: per-step losses, rewards and gradient norms equal raw TRL RLOOTrainer's (full and LoRA); GRPO's
rewards and group checks apply; what RLOO cannot honour is said; `flux plugins` lists it."""

import warnings
from pathlib import Path

import pytest
from make_prompts import make_prompts

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.trainer import FluxTrainer

STEPS = 3
E_FRACTION = {"name": "pattern_fraction", "kwargs": {"pattern": "e"}}


def rloo_dict(model_dir, output_dir, algorithm=None, **overrides) -> dict:
    data = {
        "model_path": str(model_dir),
        "output_dir": str(output_dir),
        "num_steps": STEPS,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "precision": "fp32",
        "algorithm": {
            "name": "rloo",
            "num_generations": 4,
            "max_completion_length": 8,
            "rewards": [E_FRACTION],
            **(algorithm or {}),
        },
    }
    return {**data, **overrides}


def raw_trl_logs(config: FluxConfig, rows: list[dict], lora: bool) -> list[dict]:
    """Per-step logs of an unmodified trl.RLOOTrainer with the same settings and reward, in fp32."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    from flux_core.online.builtin_rewards import pattern_fraction as flux_pattern_fraction

    def pattern_fraction(prompts, completions, **_):
        return flux_pattern_fraction(prompts, completions, pattern="e")

    algorithm = config.algorithm
    args = RLOOConfig(
        output_dir=config.output_dir + "-trl",
        max_steps=STEPS,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        num_generations=algorithm.num_generations,
        max_completion_length=algorithm.max_completion_length,
        beta=algorithm.beta,
    )
    trainer = RLOOTrainer(
        model=AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32),
        reward_funcs=[pattern_fraction],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear") if lora else None,
    )
    trainer.train()
    return [log for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_rewards_and_gradients_match_raw_trl(tiny_model_dir, tmp_path, lora):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    config = FluxConfig.from_dict(rloo_dict(tiny_model_dir, tmp_path / "out", lora=lora_block))
    rows = make_prompts(16, seed=0)

    result = FluxTrainer(config, show_progress=False).fit(prompts=rows)
    trl_logs = raw_trl_logs(config, rows, lora)
    flux = {name: result.metric(name) for name in ("loss", "reward", "grad_norm", "kl")}
    trl = {name: [log[name] for log in trl_logs] for name in ("loss", "reward", "grad_norm", "kl")}
    print(f"RLOO lora={lora}: flux {flux} trl {trl}")

    assert len(flux["loss"]) == len(trl["loss"]) == STEPS
    for name in flux:
        assert flux[name] == pytest.approx(trl[name], abs=1e-5), name
    # RLOO's loss is ~0 by construction (leave-one-out advantages sum to zero in each group): the gradient
    # and the sampled rewards are what show the two runs took the same steps
    assert min(flux["grad_norm"]) > 1e-3 and len(set(flux["reward"])) == STEPS
    last = result.history[-1].metrics
    for name in ("reward_pattern_fraction", "reward_std", "completion_length", "entropy"):
        assert name in last, sorted(last)
    assert (Path(config.output_dir) / "final").is_dir()


def test_a_batch_that_does_not_split_into_groups_is_explained_before_any_model_loads(tmp_path):
    from flux_rloo.runner import RLOORunner

    config = FluxConfig.from_dict(rloo_dict("m", tmp_path, batch_size=6))
    with pytest.raises(ConfigError, match=r"^batch_size 6 cannot be split into groups of algorithm\.num_generations=4: "
                       r"RLOO's batch_size counts completions per step"):  # fmt: skip
        RLOORunner(config)


def test_a_rollout_server_is_refused_naming_grpo(tmp_path):
    from flux_rloo.runner import RLOORunner

    config = FluxConfig.from_dict(rloo_dict("m", tmp_path, sglang={"base_url": "http://127.0.0.1:1"}))
    with pytest.raises(ConfigError, match=r"^sglang\.base_url: RLOO generates in the training process .*grpo"):
        RLOORunner(config)


@pytest.mark.parametrize(
    "trl, prompts, steps",
    [({}, 16, 8), ({"gradient_accumulation_steps": 2}, 16, 4), ({"generation_batch_size": 16}, 6, 2)],
)
def test_steps_per_epoch_of_prompts(tmp_path, trl, prompts, steps):
    config = FluxConfig.from_dict(rloo_dict("m", tmp_path, batch_size=8, trl=trl))
    # batch_size 8 with 4 generations: 2 prompts a step; a generation batch of 16 completions takes 4 prompts
    # (6 prompts: one generation batch of 2 steps, the 2 prompts left over are dropped, as TRL's sampler does)
    assert config.algorithm.steps_per_epoch(config, prompts, world_size=1) == steps


@pytest.mark.parametrize(
    "algorithm, message",
    [
        ({"rewards": []}, "algorithm.rewards: List should have at least 1 item"),
        ({"num_generations": 1}, "algorithm.num_generations: Input should be greater than or equal to 2"),
        ({"reward_clip_range": [1.0, 0.0]}, "reward_clip_range [1.0, 0.0] must be [low, high] with low < high"),
        ({"rewards": [{"name": "no_such_reward"}]}, "no_such_reward"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, algorithm, message):
    with pytest.raises(ConfigError) as error:
        FluxConfig.from_dict(rloo_dict("m", tmp_path, algorithm))
    assert message in str(error.value)


def test_adaptive_async_is_said_to_be_ignored(tmp_path):
    with pytest.warns(
        UserWarning, match=r"RLOO generates in the training process .*adaptive_async\.enabled is ignored"
    ):
        FluxConfig.from_dict(rloo_dict("m", tmp_path, adaptive_async={"enabled": True}))


def test_flux_plugins_lists_rloo(capsys, monkeypatch):
    from flux_core.cli import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI installs its one-line printer
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out

    assert "rloo (flux-rloo 0.1.0): register_algorithms" in listing
    assert "rloo: REINFORCE Leave-One-Out" in listing and "[data_format=prompts]" in listing
