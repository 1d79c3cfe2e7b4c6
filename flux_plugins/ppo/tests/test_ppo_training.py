"""End-to-end PPO runs on the tiny model: learning, invariants, LoRA, checkpoints, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError, FluxError
from flux_core.trainer import FluxTrainer

REQUIRED_METRICS = {
    "loss", "reward", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl",
    "value_explained_variance", "completion_length", "learning_rate",
}  # fmt: skip

# The GRPO demo's reward: share of characters that are the letter e.
E_FRACTION = [{"name": "pattern_fraction", "kwargs": {"pattern": "[eE]"}}]


@pytest.fixture(scope="module")
def prompt_records() -> list[dict]:
    from make_prompts import make_prompts

    return make_prompts(64, seed=0)


@pytest.fixture
def ppo_config(tiny_model_dir, tmp_path):
    """Build a small PPO FluxConfig; keyword arguments override top-level keys."""

    def make(algorithm: dict | None = None, **overrides) -> FluxConfig:
        data = {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": 3,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "seed": 0,
            "algorithm": {
                "name": "ppo",
                "rewards": E_FRACTION,
                "max_completion_length": 12,
                "ppo_epochs": 2,
                "num_minibatches": 2,
                **(algorithm or {}),
            },
        }
        data.update(overrides)
        return FluxConfig.from_dict(data)

    return make


def fit(config: FluxConfig, records: list[dict], **kwargs):
    trainer = FluxTrainer(config, show_progress=False)
    return trainer, trainer.fit(prompts=records, **kwargs)


def initial_weights(model_dir) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


# ---------------------------------------------------------------- learning


def test_mean_reward_clearly_rises(ppo_config, prompt_records):
    config = ppo_config(
        {"kl_coef": 0.01, "whiten_rewards": True, "lr_scheduler": "constant", "ppo_epochs": 4},
        num_steps=60,
        batch_size=16,
    )
    _, result = fit(config, prompt_records)
    rewards = result.metric("reward")
    assert len(rewards) == 60
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    # A random model writes ~8% e's; PPO should at least double that within 60 steps.
    assert last > 2 * first and last > first + 0.15, (first, last)
    # the critic learned something about the returns along the way
    assert max(result.metric("value_explained_variance")) > 0.2


def test_every_step_reports_every_metric_and_writes_checkpoints(ppo_config, prompt_records):
    config = ppo_config(num_steps=4, checkpoint={"save_steps": 2})
    trainer = FluxTrainer(config, show_progress=False)
    seen = []
    trainer.add_step_callback(seen.append)
    result = trainer.fit(prompts=prompt_records)

    assert [r.step for r in seen] == [1, 2, 3, 4] and result.steps == 4
    for step in seen:
        assert REQUIRED_METRICS <= set(step.metrics), REQUIRED_METRICS - set(step.metrics)
        assert 0 <= step.metrics["clipfrac"] <= 1
        assert 1 <= step.metrics["completion_length"] <= 12
    assert result.metric("learning_rate")[0] == pytest.approx(1e-3)  # linear decay starts at the peak
    assert result.metric("learning_rate")[-1] == pytest.approx(1e-3 * 1 / 4)
    assert result.final_loss == result.metric("loss")[-1]
    output = Path(config.output_dir)
    assert result.checkpoint_paths == [str(output / "checkpoint-2"), str(output / "checkpoint-4")]
    meta = json.loads((output / "best" / "flux_checkpoint.json").read_text())
    assert meta["score_name"] == "negative_smoothed_reward"

    prompt = "Explain photosynthesis."
    expected = trainer.generate(prompt, max_new_tokens=12)
    fresh = FluxTrainer(config, show_progress=False)
    fresh.load_checkpoint(output / "final")
    assert fresh.generate(prompt, max_new_tokens=12) == expected


def test_eval_data_picks_best_by_greedy_reward(ppo_config, prompt_records):
    config = ppo_config(num_steps=2, checkpoint={"save_steps": 1})
    _, result = fit(config, prompt_records, eval_data=prompt_records[:8])
    metas = [json.loads((Path(p) / "flux_checkpoint.json").read_text()) for p in result.checkpoint_paths]
    best = json.loads((Path(result.best_path) / "flux_checkpoint.json").read_text())
    assert {m["score_name"] for m in metas} == {"negative_eval_reward"}
    assert all(-1.0 <= m["score"] <= 0.0 for m in metas)  # minus a share of characters
    assert best["score"] == min(m["score"] for m in metas)


def test_first_step_kl_is_zero_against_a_frozen_copy(ppo_config, prompt_records):
    _, result = fit(ppo_config(num_steps=2), prompt_records)
    kl = result.metric("kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # policy == reference before any update
    assert abs(kl[1]) > 1e-4  # and the update moved the policy away from it


def test_reference_policy_none_loads_no_reference_and_has_no_kl(ppo_config, prompt_records, monkeypatch):
    import flux_ppo.models as models_module  # load_policy looks load_model up there

    loads = []
    real_load_model = models_module.load_model
    monkeypatch.setattr(models_module, "load_model", lambda *a, **k: loads.append(a) or real_load_model(*a, **k))
    with pytest.warns(UserWarning, match="kl_coef has no effect"):
        config = ppo_config({"reference_policy": "none"}, num_steps=2)
    _, result = fit(config, prompt_records)
    assert len(loads) == 1  # the policy only
    assert result.metric("kl") == [0.0, 0.0] and result.metric("kl_coef") == [0.0, 0.0]
    assert result.metric("approx_kl")[-1] > 0  # the policy did train


# ---------------------------------------------------------------- invariants


def test_zero_learning_rate_leaves_the_policy_unchanged(ppo_config, prompt_records, tiny_model_dir):
    # FluxConfig requires learning_rate > 0; model_copy bypasses that for this invariant.
    # fp32 so the weights compare bit for bit with the fp32 checkpoint (auto is bf16 on a GPU).
    config = ppo_config(num_steps=2, precision="fp32").model_copy(update={"learning_rate": 0.0})
    trainer, result = fit(config, prompt_records)

    before = initial_weights(tiny_model_dir)
    after = {name: tensor.cpu() for name, tensor in trainer.model.state_dict().items()}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    for step in result.history:
        # the policy never moved, so every PPO ratio is 1: nothing clipped, no drift
        assert step.metrics["approx_kl"] < 1e-10
        assert step.metrics["clipfrac"] == 0.0
        assert step.metrics["kl"] == pytest.approx(0.0, abs=1e-6)
        assert step.metrics["learning_rate"] == 0.0


def test_a_run_after_a_bf16_trainer_in_the_same_process_trains(ppo_config, prompt_records):
    """A TRL trainer in bf16 (DPO on a GPU, say) leaves mixed precision in accelerate's process-wide
    state; PPO used to die on it ("AcceleratorState has already been initialized"), e.g. in a notebook
    or on a GPU test worker. bf16 on the CPU stands in for the GPU's; on a GPU machine the CPU state
    left behind is a second mismatch PPO must clear."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # as a TRL trainer's TrainingArguments do
    Accelerator(mixed_precision="bf16", cpu=True)
    try:
        _, result = fit(ppo_config(num_steps=1, precision="fp32"), prompt_records)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert result.steps == 1 and result.history[0].metrics["reward"] >= 0


def test_same_seed_same_run_other_seed_other_run(ppo_config, prompt_records, tmp_path):
    def metrics(seed, name):
        _, result = fit(ppo_config(num_steps=2, seed=seed, output_dir=str(tmp_path / name)), prompt_records)
        return [step.metrics for step in result.history]

    first, second, other = metrics(0, "first"), metrics(0, "second"), metrics(1, "other")
    measured = {"peak_memory_mb", "tokens_per_second"}  # the machine's, not the run's
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a.keys() - measured:
            assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-9), name
    assert first[0]["reward"] != other[0]["reward"]


def test_missing_eos_penalty_lowers_the_training_score_of_truncated_completions(ppo_config, prompt_records):
    config = ppo_config({"missing_eos_penalty": 1.0, "max_completion_length": 4}, num_steps=1)
    _, result = fit(config, prompt_records)
    step = result.history[0].metrics
    assert step["truncated_fraction"] > 0.5  # a random model rarely says EOS within 4 tokens
    score = step["rlhf_reward"] - step["non_score_reward"]
    assert score == pytest.approx(step["reward"] - 1.0 * step["truncated_fraction"], abs=1e-5)


def test_adaptive_kl_moves_the_coefficient(ppo_config, prompt_records):
    config = ppo_config({"adaptive_kl": True, "kl_target": 0.01, "kl_horizon": 100, "kl_coef": 0.1}, num_steps=3)
    _, result = fit(config, prompt_records)
    coefs = result.metric("kl_coef")
    assert coefs[0] == pytest.approx(0.1)
    # step 1 has KL 0 < target: the coefficient falls, then grows once KL exceeds the target
    assert coefs[1] == pytest.approx(0.1 * (1 - 0.2 * 8 / 100))
    assert coefs[2] > coefs[1]


# ---------------------------------------------------------------- LoRA


def test_lora_reference_is_the_disabled_adapter_and_value_model_can_use_lora(ppo_config, prompt_records, monkeypatch):
    import flux_ppo.models as models_module  # load_policy looks load_model up there
    import flux_ppo.runner as runner_module
    from peft import PeftModel

    loads = []
    real_load_model = models_module.load_model
    monkeypatch.setattr(models_module, "load_model", lambda *a, **k: loads.append(a) or real_load_model(*a, **k))
    # fp32: the merged-vs-live logits below are compared to 1e-4, which bf16 cannot hold
    config = ppo_config(
        {"value_lora": True}, num_steps=3, lora={"r": 4, "alpha": 8}, learning_rate=5e-3, precision="fp32"
    )
    runner = runner_module.PPORunner(config, show_progress=False)
    result = runner.fit(Dataset.from_list(prompt_records), None, [])

    assert len(loads) == 1  # only the policy: the reference is the policy with its adapter off
    assert isinstance(runner.model, PeftModel)
    assert result.metric("kl")[0] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the identity
    # The logged KL is the k1 estimate, sum(logp - ref_logp) over sampled tokens: its sign is
    # sampling noise (one H100 run ended at -0.104), its size says the adapter moved the policy.
    assert abs(result.metric("kl")[-1]) > 1e-5

    value_model = runner.value_model
    assert isinstance(value_model, PeftModel)
    base_trunk = {n: p for n, p in value_model.named_parameters() if "lora_" not in n and "score" not in n}
    assert base_trunk and not any(p.requires_grad for p in base_trunk.values())  # frozen trunk
    assert any(p.requires_grad for n, p in value_model.named_parameters() if "score" in n)  # trained head

    final = Path(config.output_dir) / "final"
    assert (final / "adapter" / "adapter_config.json").exists()
    device = next(runner.model.parameters()).device
    merged = AutoModelForCausalLM.from_pretrained(final).to(device)
    assert not any("lora" in key for key in merged.state_dict())
    input_ids = torch.tensor([[5, 17, 42, 99, 7]], device=device)
    with torch.no_grad():
        assert torch.allclose(merged.eval()(input_ids).logits, runner.model.eval()(input_ids).logits, atol=1e-4)


# ---------------------------------------------------------------- reward and value model directories


def test_reward_model_directory_scores_and_initialises_the_value_model(
    ppo_config, prompt_records, tiny_model_dir, tmp_path
):
    """InstructGPT's setup: the critic starts as the reward model (trunk and head)."""
    import flux_ppo.runner as runner_module
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    reward_dir = tmp_path / "reward-model"
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    reward_model.config.pad_token_id = 0
    reward_model.save_pretrained(reward_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(reward_dir)

    config = ppo_config(
        {"rewards": [], "reward_model": str(reward_dir), "value_model": str(reward_dir)}, num_steps=1, precision="fp32"
    )
    runner = runner_module.PPORunner(config, show_progress=False)
    runner.build()
    # kept, not a fresh head (compared on the CPU: the runner's copy is on the GPU when there is one)
    assert torch.equal(runner.value_model.score.weight.cpu(), reward_model.score.weight)

    result = runner_module.PPORunner(config, show_progress=False).fit(Dataset.from_list(prompt_records), None, [])
    step = result.history[0].metrics
    assert step["reward_reward_model"] == step["reward"] and step["reward"] != 0.0


# ---------------------------------------------------------------- plugins


def test_a_plugin_policy_loss_is_the_one_used(ppo_config, prompt_records, register_plugin):
    from flux_ppo.losses import clipped_policy_loss

    from flux_core import hookimpl

    calls = []

    def scaled_clipped(inputs, *, cliprange, scale):
        calls.append((scale, cliprange, inputs.ref_logprobs is not None))
        return scale * clipped_policy_loss(inputs, cliprange=cliprange)

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("scaled_clipped", scaled_clipped, algorithm="ppo")

    register_plugin(Plugin(), name="test-ppo-loss")
    config = ppo_config({"loss": "scaled_clipped", "loss_kwargs": {"scale": 0.0}, "vf_coef": 0.0}, num_steps=2)
    trainer, result = fit(config, prompt_records)
    assert calls and set(calls) == {(0.0, 0.2, True)}
    # a zero policy loss and no value loss: nothing to learn, the first step's loss is exactly 0
    assert result.metric("policy_loss")[0] == 0.0 and result.metric("loss")[0] == 0.0


def test_chat_prompts_and_extra_columns_reach_the_rewards(ppo_config, register_plugin):
    from make_prompts import make_prompts

    from flux_core import hookimpl

    seen = []

    def topic_echo(prompts, completions, *, bonus: float = 0.0, **columns):
        seen.append((prompts, completions, columns))
        topics = columns["topic"]
        return [bonus + float(topic in prompt[-1]["content"].lower()) for prompt, topic in zip(prompts, topics)]

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register("topic_echo", topic_echo)

    register_plugin(Plugin(), name="test-ppo-reward")
    rewards = [{"name": "topic_echo", "kwargs": {"bonus": 0.5}}]
    config = ppo_config({"rewards": rewards, "num_generations": 2}, num_steps=1)
    _, result = fit(config, make_prompts(16, seed=1, chat=True))

    prompts, completions, columns = seen[0]
    assert len(prompts) == len(completions) == len(columns["topic"]) == 16  # 8 prompts x 2 generations
    assert prompts[0] == prompts[1] and isinstance(prompts[0], list)  # both generations of one prompt
    assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in completions)
    assert result.history[0].metrics["reward"] == pytest.approx(1.5)  # every prompt names its topic


def test_a_policy_loss_of_the_wrong_shape_is_a_one_line_error(ppo_config, prompt_records, register_plugin):
    from flux_core import hookimpl

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("scalar", lambda inputs, *, cliprange: inputs.logprobs.mean(), algorithm="ppo")

    register_plugin(Plugin(), name="test-ppo-bad-loss")
    with pytest.raises(FluxError, match="one value per completion token"):
        fit(ppo_config({"loss": "scalar"}, num_steps=1), prompt_records)


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ({"rewards": []}, "PPO needs a reward"),
        ({"loss": "clipt"}, "algorithm.loss: unknown ppo loss 'clipt' .did you mean 'clipped'"),
        ({"cliprange": 0}, "algorithm.cliprange"),
        ({"gamma": 1.5}, "algorithm.gamma"),
        ({"kl_estimator": "k2"}, "algorithm.kl_estimator"),
        ({"ppo_epoch": 2}, "did you mean 'ppo_epochs'"),
        ({"rewards": [{"name": "pattern_fraktion", "kwargs": {"pattern": "e"}}]}, "did you mean 'pattern_fraction'"),
    ],
)
def test_bad_algorithm_settings_are_one_line_config_errors(ppo_config, algorithm, message):
    with pytest.raises(ConfigError, match=message) as error:
        ppo_config(algorithm)
    assert "\n" not in str(error.value)


def test_settings_checked_before_training_name_the_key(ppo_config, prompt_records, tmp_path):
    with pytest.raises(FluxError, match="algorithm.num_minibatches: 3 does not divide"):
        fit(ppo_config({"num_minibatches": 3}), prompt_records)
    with pytest.raises(FluxError, match="reference_policy: adapter needs a lora"):
        fit(ppo_config({"reference_policy": "adapter"}), prompt_records)
    with pytest.raises(FluxError, match="algorithm.value_model: .*directory not found"):
        fit(ppo_config({"value_model": str(tmp_path / "missing")}), prompt_records)
