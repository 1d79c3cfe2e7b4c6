"""flux-rm: per-step losses equal raw TRL RewardTrainer's; every preference shape trains; the saved
reward model loads as a reward (``rewards: [{model: DIR}]``) and ranks held-out pairs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl

from flux_core.trainer import FluxTrainer

STEPS = 4


@pytest.fixture
def rm_config(tiny_model_dir, tmp_path):
    """A small reward-model FluxConfig in fp32; keyword arguments override top-level keys."""
    from flux_core.config import FluxConfig

    def make(**overrides):
        data = {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": STEPS,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 128,
            "precision": "fp32",
            "algorithm": {"name": "reward_model"},
            **overrides,
        }
        return FluxConfig.from_dict(data)

    return make


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as a one-label sequence classifier, score head saved, so both trainers load the same one.

    From the causal LM each trainer would draw a fresh head, and on a GPU TRL draws it there
    (``device_map="auto"``), from CUDA's random stream rather than the CPU's: the heads, and so every
    loss, would differ from step 1 (0.787 vs 0.813 on an H200)."""
    from flux_rm.runner import load_reward_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = load_reward_model(str(tiny_model_dir), "fp32", seed=0, pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step training losses of an unmodified trl.RewardTrainer with the same settings, in fp32."""
    from trl import RewardConfig, RewardTrainer

    args = raw_trl_args(RewardConfig, config, STEPS)
    # The model as a path: RewardTrainer loads it as a one-label sequence classifier itself.
    # With LoRA the fresh score head is trained in full, as TRL's docs recommend and Flux does.
    return train_raw_trl(
        RewardTrainer, args, config.model_path, config.model_path, records, lora,
        task_type="SEQ_CLS", modules_to_save=["score"],
    )  # fmt: skip


def reward_accuracy(model_dir, pairs) -> float:
    """Share of pairs scored higher for chosen, through the reward GRPO and PPO use for {model: DIR}."""
    from flux_core.online.rewards import build_reward_functions

    (reward,) = build_reward_functions([{"model": str(model_dir)}])
    prompts = [pair["prompt"] for pair in pairs]
    chosen = reward(prompts, [pair["chosen"] for pair in pairs])
    rejected = reward(prompts, [pair["rejected"] for pair in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_match_raw_trl(rm_config, classifier_dir, preference_records, lora):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    config = rm_config(lora=lora_block, model_path=str(classifier_dir))

    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    flux_losses = result.metric("loss")
    trl_losses = raw_trl_losses(config, preference_records, lora)

    assert len(flux_losses) == len(trl_losses) == STEPS
    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert flux_losses[-1] < flux_losses[0] - 1e-3  # it trained (the LoRA run too): not a trivial match
    for name in ("accuracy", "reward_margin", "mean_reward"):
        assert name in result.history[-1].metrics, sorted(result.history[-1].metrics)


def test_reward_model_ranks_held_out_pairs_and_loads_as_a_reward(rm_config, preference_records):
    """The user's path: train on pairs with eval data, see eval_accuracy, use final/ and best/ as rewards."""
    train, held_out = preference_records[:48], preference_records[48:]
    config = rm_config(num_steps=12, checkpoint={"save_steps": 6})

    result = FluxTrainer(config, show_progress=False).fit(prompts=train, eval_data=held_out)

    metrics = [step.metrics for step in result.history]
    assert "eval_accuracy" in metrics[5] and "eval_accuracy" in metrics[-1]  # save point 6 and the last step
    assert "eval_accuracy" not in metrics[0]
    assert metrics[-1]["eval_accuracy"] >= 0.9  # the demo pairs are separable: far above chance (0.5)
    assert result.metric("loss")[-1] < result.metric("loss")[0]
    logged = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["eval_accuracy"] == metrics[-1]["eval_accuracy"]

    for name in ("final", "best"):
        saved = json.loads((Path(config.output_dir) / name / "config.json").read_text())
        assert saved["architectures"] == ["Qwen3ForSequenceClassification"]
        assert len(saved["id2label"]) == 1 and saved["pad_token_id"] is not None
        assert reward_accuracy(Path(config.output_dir) / name, held_out) >= 0.9

    # its model card says how to use a reward model, not how to load a text generator
    card = (Path(config.output_dir) / "final" / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "AutoModelForSequenceClassification" in card
    assert "AutoModelForCausalLM" not in card and "rewards: [{model: PATH_OR_REPO_ID}]" in card

    # ...and it is not a text generator: generating from it is a one-line error, not noise
    from flux_core.errors import FluxError

    with pytest.raises(FluxError, match=r"is a reward model \(Qwen3ForSequenceClassification\), not a text generator"):
        FluxTrainer(config, show_progress=False).load_checkpoint(Path(config.output_dir) / "final")


def test_lora_reward_model_saves_its_trained_score_head(rm_config, preference_records):
    """A LoRA reward model's final/ holds the merged adapter and the fully trained score head."""
    config = rm_config(num_steps=12, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records[:48])

    assert reward_accuracy(result.final_path, preference_records[48:]) >= 0.9
    assert (Path(result.final_path) / "adapter").is_dir()


@pytest.mark.parametrize("shape", ["hh", "conversational", "h4"])
def test_every_preference_shape_trains(rm_config, shape):
    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_shaped_pairs

    config = rm_config(num_steps=3, max_length=256)
    result = FluxTrainer(config, show_progress=False).fit(prompts=make_shaped_pairs(32, 0, shape))

    losses = result.metric("loss")
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_flux_eval_reports_pairwise_accuracy(rm_config, preference_records, tmp_path):
    from flux_core.evaluate import evaluate

    config = rm_config(num_steps=8)
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records[:48])
    untrained = evaluate(config, config.model_path, preference_records[48:])
    trained = evaluate(config, result.final_path, preference_records[48:])

    assert set(trained) >= {"loss", "accuracy", "reward_margin"}
    assert trained["accuracy"] >= 0.9 and trained["loss"] < untrained["loss"]


def test_pairs_longer_than_max_length_are_an_error_not_an_empty_run(rm_config, preference_records):
    from flux_core.errors import FluxError

    config = rm_config(max_length=4)
    with pytest.raises(FluxError, match=r"data: all 64 pairs are longer than max_length 4 tokens"):
        FluxTrainer(config, show_progress=False).fit(prompts=preference_records)


def test_flux_plugins_lists_reward_model():
    flux = str(Path(sys.executable).with_name("flux"))
    result = subprocess.run([flux, "plugins"], check=False, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "rm (flux-rm 0.1.0): register_algorithms" in result.stdout
    assert "reward_model: Reward model" in result.stdout and "[data_format=preferences]" in result.stdout


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_grpo_and_ppo_train_against_the_saved_reward_model(rm_config, preference_records, tmp_path, algorithm):
    from flux_core.config import FluxConfig

    rm = FluxTrainer(rm_config(), show_progress=False).fit(prompts=preference_records[:32])
    online = FluxConfig.from_dict(
        {
            "model_path": rm_config().model_path,
            "output_dir": str(tmp_path / algorithm),
            "num_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "algorithm": {
                "name": algorithm,
                "num_generations": 4 if algorithm == "grpo" else 1,
                "max_completion_length": 8,
                "rewards": [{"model": rm.final_path}],
            },
        }
    )
    result = FluxTrainer(online, show_progress=False).fit(prompts=[{"prompt": p["prompt"]} for p in preference_records])

    rewards = result.metric("reward_reward_model")
    assert len(rewards) == 2 and all(math.isfinite(value) for value in rewards)  # scored by the reward model
