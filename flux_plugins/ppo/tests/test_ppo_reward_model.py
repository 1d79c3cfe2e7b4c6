"""PPO against a reward *model* (the objective TRL 1.12's PPOTrainer was known for), the
reward model scoring the sampled ids themselves, and mixed precision keeping fp32 weights."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
import torch
from paths import REPO

from flux_core.config import FluxConfig
from flux_core.online.rollout import Rollout
from flux_core.trainer import FluxTrainer

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture
def reward_dir(tmp_path, tiny_model_dir, monkeypatch):
    """The benchmark's reward model: random-init sequence classifier on the tiny config (seeded)."""
    import bench_ppo

    monkeypatch.setattr(bench_ppo, "TINY_MODEL", Path(tiny_model_dir))
    return bench_ppo.make_reward_model(tmp_path / "reward-model")


def rm_config(tiny_model_dir, reward_dir, output_dir, learning_rate=3e-4, **algorithm) -> FluxConfig:
    return FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(output_dir),
            "num_steps": 128,
            "batch_size": 8,
            "learning_rate": learning_rate,
            "seed": 0,
            "precision": "fp32",
            "checkpoint": {"save_steps": None},
            "algorithm": {"name": "ppo", "reward_model": str(reward_dir), "max_completion_length": 16, **algorithm},
        }
    )


@torch.no_grad()
def pooled_score(model, ids: list[int]) -> float:
    """The reward model's own score of one unpadded sequence (its pooling: the last non-pad token)."""
    return model(input_ids=torch.tensor([ids], device=model.device)).logits[0, 0].item()


@pytest.mark.slow
def test_reward_model_score_rises_by_four_in_128_steps(tiny_model_dir, reward_dir, tmp_path):
    """Flux's defaults on the benchmark's objective (bench_ppo.py, lr 3e-3, where TRL 1.12 climbs too).

    Seed 0 rose 5.9 when measured (docs/ppo.md); over seeds 0-5 the rise was 3.5-5.9, so another seed may
    miss 4. Single-threaded CPU runs of one seed are bit-identical, so this one is reproducible.
    """
    import bench_ppo
    from make_prompts import make_prompts

    if torch.cuda.is_available():  # the bar is seed 0's on the CPU's random stream (issue #14)
        pytest.skip("seed 0 samples other completions on CUDA (an H200 rose 2.8, -0.48 -> 2.33); the bar is the CPU's")
    config = rm_config(tiny_model_dir, reward_dir, tmp_path / "out", learning_rate=bench_ppo.RM_LR)
    scores = FluxTrainer(config, show_progress=False).fit(prompts=make_prompts(256, seed=0)).metric("reward")
    first, last = statistics.mean(scores[:12]), statistics.mean(scores[-12:])
    assert last - first >= 4.0, f"mean score {first:.2f} (first 12 steps) -> {last:.2f} (last 12)"


def test_the_reward_model_scores_the_sampled_ids_not_their_retokenised_text(tiny_model_dir, reward_dir, tmp_path):
    import flux_ppo.runner as runner_module

    from flux_core.online.builtin_rewards import _load_reward_model

    runner = runner_module.PPORunner(rm_config(tiny_model_dir, reward_dir, tmp_path / "out"), show_progress=False)
    runner.build()
    assert len(runner.token_scorers) == 1  # same vocabulary and template as the policy: ids are scored
    # ids whose decoded text re-encodes differently (a lone byte of a multi-byte character)
    tokenizer = runner.tokenizer
    prompt_ids = tokenizer("Explain tides.")["input_ids"]
    completions = [[300, 301, 302], [7, 8, 9, 10, 11]]
    rollouts = [
        Rollout(0, prompt_ids, ids + [tokenizer.eos_token_id], tokenizer.decode(ids), False) for ids in completions
    ]
    runner.backend.generate = lambda prompts, n, sampling: rollouts
    _, scores = runner.rollout([{"prompt": "Explain tides."}], runner.sampling, n=1)

    model, _ = _load_reward_model(str(reward_dir))
    expected = [pooled_score(model, prompt_ids + ids) for ids in completions]  # EOS (the pad) left out
    assert scores.total == pytest.approx(expected, abs=1e-4)


def test_with_a_pad_other_than_the_eos_the_eos_is_scored(tiny_model_dir, reward_dir, tmp_path):
    """Where the reward model's own pooling reads (its last non-pad token), on the completion as
    RewardTrainer trains it (ending in the reward model's EOS): at the EOS when the pad differs
    from it, as TRL 1.12 scored too."""
    import shutil

    import flux_ppo.runner as runner_module
    from transformers import AutoTokenizer

    from flux_core import eos_token_ids
    from flux_core.online.builtin_rewards import _load_reward_model

    padded_dir = tmp_path / "reward-model-padded"
    shutil.copytree(reward_dir, padded_dir)
    tokenizer = AutoTokenizer.from_pretrained(padded_dir)
    tokenizer.pad_token = "<|im_start|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    tokenizer.save_pretrained(padded_dir)

    runner = runner_module.PPORunner(rm_config(tiny_model_dir, padded_dir, tmp_path / "out"), show_progress=False)
    runner.build()
    assert len(runner.token_scorers) == 1
    eos = tokenizer.eos_token_id
    prompt_ids = runner.tokenizer("Explain tides.")["input_ids"]
    other_stop = 2  # the tiny model's generation config stops at 0 (its EOS) and 2
    assert {eos, other_stop} <= set(eos_token_ids(runner.model, runner.tokenizer))
    # the second was cut without a stop; the third stopped at the other stop id
    completions = [[300, 301, 302, eos], [7, 8, 9, 10, 11], [40, 41, other_stop]]
    rollouts = [Rollout(0, prompt_ids, ids, "", ids[-1] not in (eos, other_stop)) for ids in completions]
    runner.backend.generate = lambda prompts, n, sampling: rollouts
    _, scores = runner.rollout([{"prompt": "Explain tides."}], runner.sampling, n=1)

    model, _ = _load_reward_model(str(padded_dir))
    assert model.config.pad_token_id == tokenizer.pad_token_id
    expected = [pooled_score(model, prompt_ids + ids) for ids in (completions[0], completions[1], [40, 41, eos])]
    assert scores.total == pytest.approx(expected, abs=1e-4)
    assert abs(scores.total[0] - pooled_score(model, prompt_ids + completions[0][:-1])) > 1e-3  # the EOS was read


def test_text_input_keeps_the_shared_reward_model_path(tiny_model_dir, reward_dir, tmp_path):
    import flux_ppo.runner as runner_module

    config = rm_config(tiny_model_dir, reward_dir, tmp_path / "out", reward_model_input="text")
    runner = runner_module.PPORunner(config, show_progress=False)
    runner.build()
    assert runner.token_scorers == []


def test_the_critic_starts_as_the_only_reward_model(tiny_model_dir, reward_dir, tmp_path):
    import flux_ppo.runner as runner_module
    from transformers import AutoModelForSequenceClassification

    runner = runner_module.PPORunner(rm_config(tiny_model_dir, reward_dir, tmp_path / "out"), show_progress=False)
    runner.build()
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir)
    assert torch.equal(runner.value_model.score.weight.cpu(), reward_model.score.weight)


def test_bf16_autocast_keeps_fp32_weights_and_fp32_values(tiny_model_dir, reward_dir, tmp_path):
    """With precision bf16 (a GPU) PPO trains fp32 weights under autocast; CPU autocast runs the same path.
    A step of lr 1e-5 moves the fp32 weights; in bf16 weights most such updates round away."""
    import flux_ppo.runner as runner_module
    from make_prompts import make_prompts

    config = rm_config(tiny_model_dir, reward_dir, tmp_path / "out", ppo_epochs=1).model_copy(
        update={"learning_rate": 1e-5}
    )
    runner = runner_module.PPORunner(config, show_progress=False)
    runner.build()
    runner.autocast_dtype = torch.bfloat16  # what precision: bf16 sets on a GPU
    before = {name: p.detach().clone() for name, p in runner.model.named_parameters()}
    experience = runner.make_experience(make_prompts(8, seed=0))
    assert experience.values.dtype == torch.float32 and experience.logprobs.dtype == torch.float32
    assert torch.isfinite(experience.advantages).all()
    runner.update(experience, step=1)
    params = dict(runner.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    assert all(p.dtype == torch.float32 for p in runner.value_model.parameters())
    moved = [name for name, p in params.items() if not torch.equal(p, before[name])]
    assert len(moved) == len(params)
