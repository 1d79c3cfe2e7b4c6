"""flux-online-dpo: per-step losses equal raw TRL OnlineDPOTrainer's; a rollout server's completions reach TRL's
loss in TRL's layout; reward models rank the pairs; what cannot run is one line before any model loads."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from make_prompts import make_prompts
from raw_trl import raw_trl_args

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError, FluxError
from flux_core.online.rollout import LocalBackend, Rollout
from flux_core.trainer import FluxTrainer

STEPS = 3
E_FRACTION = {"name": "pattern_fraction", "kwargs": {"pattern": "e"}}
# TRL rounds the logged loss to 4 decimals; these it logs as computed, so they pin the numbers down further.
UNROUNDED = {"reward_margin": "rewards/margins", "chosen_logp": "logps/chosen", "rejected_logp": "logps/rejected"}


def online_dpo_config(dpo_config, rewards=(E_FRACTION,), **overrides):
    algorithm = {"name": "online_dpo", "max_completion_length": 8, "rewards": list(rewards)}
    settings = {"num_steps": STEPS, "batch_size": 4, "precision": "fp32", "seed": 0, **overrides}
    return dpo_config(algorithm, **settings)


def raw_trl_logs(config, records, lora: bool) -> list[dict]:
    """Each step's logs of an unmodified OnlineDPOTrainer with the same settings and reward, in fp32. Both sides
    seed torch with ``seed`` and draw the same random numbers before the first generation, so they sample alike."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from flux_core import TRLReward, build_reward_functions

    algorithm = config.algorithm
    args = raw_trl_args(
        OnlineDPOConfig, config, STEPS, max_new_tokens=algorithm.max_completion_length, beta=algorithm.beta
    )
    lora_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = OnlineDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32),
        reward_funcs=[TRLReward(reward) for reward in build_reward_functions(algorithm.rewards)],
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
        peft_config=lora_config if lora else None,
    )
    trainer.train()
    return [log for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_match_raw_trl(dpo_config, lora):
    config = online_dpo_config(dpo_config, lora={"r": 4, "alpha": 8, "dropout": 0.0} if lora else None)
    records = make_prompts(16, seed=0)

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)
    trl_logs = raw_trl_logs(config, records, lora)

    assert len(result.history) == len(trl_logs) == STEPS
    assert result.metric("loss") == pytest.approx([log["loss"] for log in trl_logs], abs=1e-5)
    for flux_name, trl_name in UNROUNDED.items():
        assert result.metric(flux_name) == pytest.approx([log[trl_name] for log in trl_logs], abs=1e-5)
    assert len(set(result.metric("loss"))) > 1  # the policy moved: not a match of untrained numbers
    last = result.history[-1].metrics
    for name in ("reward", "score_margin", "kl", "accuracy", "chosen_reward", "rejected_reward"):
        assert name in last, sorted(last)
    assert (Path(config.output_dir) / "best").is_dir() and (Path(config.output_dir) / "final").is_dir()


class RecordingServer:
    """A stand-in rollout server: samples with the policy (as a server holding synced weights would) and
    records what the trainer asked of it."""

    is_local = False

    def __init__(self, model, tokenizer):
        self.local = LocalBackend(model, tokenizer)
        self.requests: list[tuple[list, int]] = []
        self.syncs = 0

    def generate(self, prompts, n, sampling):
        self.requests.append((list(prompts), n))
        return self.local.generate(prompts, n, sampling)

    def sync_weights(self, model):
        self.syncs += 1
        self.local.sync_weights(model)


def reward_model_dir(tiny_model_dir, directory: Path) -> Path:
    """A random-init one-label sequence classifier on the tiny model's config, as flux-rm saves one."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


def test_a_rollout_server_and_a_reward_model_drive_training(dpo_config, tiny_model_dir, tmp_path):
    from flux_online_dpo.runner import OnlineDPORunner

    rewards = [{"model": str(reward_model_dir(tiny_model_dir, tmp_path / "rm"))}]
    config = online_dpo_config(dpo_config, rewards, num_steps=2, batch_size=2)
    servers = []

    def server(config, model, tokenizer):
        servers.append(RecordingServer(model, tokenizer))
        return servers[0]

    runner = OnlineDPORunner(config, show_progress=False, rollout_backend=server)
    records = make_prompts(4, seed=0)
    from flux_core.data.load import load_data

    result = runner.fit(load_data(records, "prompts"), None, [])

    (backend,) = servers
    assert [n for _, n in backend.requests] == [2, 2]  # two completions of each prompt, once per step
    asked = [prompt for prompts, _ in backend.requests for prompt in prompts]
    assert sorted(asked) == sorted(record["prompt"] for record in records)
    assert backend.syncs == 3  # before training, before step 2's generation, after the last step
    for step in result.history:
        assert step.metrics["score_margin"] >= 0  # the reward model ranked each pair: chosen scored higher
        assert step.metrics["reward"] != 0
    assert len(set(result.metric("loss"))) == 2


def test_server_completions_are_laid_out_as_trl_generates_them():
    """Every prompt's first completion, then every prompt's second: TRL splits the rewards in two halves."""
    from flux_online_dpo.rollouts import BackendGeneration

    class Server:
        is_local = False

        def generate(self, prompts, n, sampling):
            ids = {"a": [5, 6], "b": [7]}
            return [
                Rollout(i, ids[p], [10 * (i + 1) + k] * (k + 1) + [2], "", False)
                for i, p in enumerate(prompts)
                for k in range(n)
            ]

        def sync_weights(self, model):
            pass

    trainer = SimpleNamespace(
        _tokenizer=SimpleNamespace(pad_token_id=0),
        accelerator=SimpleNamespace(device="cpu"),
        state=SimpleNamespace(global_step=0),
        model=None,
    )
    generation = BackendGeneration(Server(), sampling=None)
    generation.trainer = trainer
    prompt_ids, prompt_mask, completion_ids, completion_mask, vision = generation(None, ["a", "b"])

    assert prompt_ids.tolist() == [[5, 6], [0, 7], [5, 6], [0, 7]]  # left-padded
    assert prompt_mask.tolist() == [[1, 1], [0, 1], [1, 1], [0, 1]]
    assert completion_ids.tolist() == [[10, 2, 0], [20, 2, 0], [11, 11, 2], [21, 21, 2]]  # right-padded
    assert completion_mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert vision is None


def test_held_out_data_is_refused_before_any_model_loads(tmp_path):
    from flux_online_dpo.runner import OnlineDPORunner

    config = FluxConfig.from_dict(
        {
            "model_path": str(tmp_path / "never-loaded"),
            "eval_fraction": 0.1,
            "algorithm": {"name": "online_dpo", "rewards": [E_FRACTION]},
        }
    )
    with pytest.raises(ConfigError, match=r"^eval_fraction: online DPO has no held-out loss"):
        OnlineDPORunner(config)


@pytest.mark.parametrize(
    "algorithm, trl, message",
    [
        ({"temperature": 0}, {}, "algorithm.temperature: Input should be greater than 0"),
        ({}, {"max_new_tokens": 32}, "trl.max_new_tokens: is set by Flux: use algorithm.max_completion_length"),
        ({"loss_type": "hinge"}, {}, "algorithm.loss_type: Input should be 'sigmoid' or 'ipo'"),
        ({"rewards": []}, {}, "algorithm.rewards: List should have at least 1 item"),
    ],
)
def test_config_errors_name_the_key(algorithm, trl, message):
    data = {"model_path": "org/model", "trl": trl, "algorithm": {"name": "online_dpo", "rewards": [E_FRACTION]}}
    data["algorithm"].update(algorithm)
    with pytest.raises(ConfigError) as info:
        FluxConfig.from_dict(data)
    assert message in str(info.value)


def test_trl_moving_online_dpo_is_one_line_naming_trl_and_the_plugin(monkeypatch):
    import trl
    from flux_online_dpo import trl_experimental

    monkeypatch.setattr(trl_experimental, "MODULE", "trl.experimental.no_online_dpo_here")
    with pytest.raises(FluxError) as info:
        trl_experimental.OnlineDPOTrainer  # noqa: B018 - the attribute access is the import
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"flux-online-dpo 0.1.0 cannot run on TRL {trl.__version__}: ")
    assert "trl.experimental.no_online_dpo_here cannot be imported" in message


def test_the_demo_config_is_valid_and_flux_plugins_lists_online_dpo():
    from paths import REPO

    config = FluxConfig.from_yaml(REPO / "configs" / "online-dpo-demo.yaml")
    assert config.algorithm.name == "online_dpo"

    flux = str(Path(sys.executable).with_name("flux"))
    result = subprocess.run([flux, "plugins"], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "online_dpo (flux-online-dpo 0.1.0): register_algorithms" in result.stdout
    assert "online_dpo: Online DPO" in result.stdout and "[data_format=prompts]" in result.stdout
