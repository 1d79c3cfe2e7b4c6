"""flux-orpo: per-step losses equal raw TRL ORPOTrainer's (full and LoRA, text and chat pairs); TRL moving
ORPO out of trl.experimental is one line; `flux plugins` lists it."""

import sys
import warnings
from pathlib import Path

import pytest
from make_preferences import make_shaped_pairs
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl

from flux_core.data.load import load_data
from flux_core.trainer import FluxTrainer

STEPS = 3


def orpo_config(dpo_config, **overrides):
    return dpo_config({"name": "orpo", "beta": 0.2}, num_steps=STEPS, precision="fp32", **overrides)


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step training losses of an unmodified ORPOTrainer with the same settings, in fp32."""
    import torch
    from flux_orpo.trl_experimental import ORPOConfig, ORPOTrainer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(ORPOConfig, config, STEPS, beta=config.algorithm.beta)
    return train_raw_trl(ORPOTrainer, args, model, config.model_path, records, lora)


@pytest.mark.parametrize(
    "lora, shape",
    [(False, "explicit"), (True, "explicit"), (False, "conversational")],
    ids=["full", "lora", "chat-pairs"],
)
def test_per_step_losses_match_raw_trl(dpo_config, lora, shape):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    config = orpo_config(dpo_config, lora=lora_block)
    rows = make_shaped_pairs(32, 0, shape)

    result = FluxTrainer(config, show_progress=False).fit(prompts=rows)
    flux_losses = result.metric("loss")
    trl_losses = raw_trl_losses(config, load_data(rows, "preferences").to_list(), lora)
    print(f"ORPO {shape} lora={lora}: flux {flux_losses} trl {trl_losses}")

    assert len(flux_losses) == len(trl_losses) == STEPS
    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert flux_losses[-1] < flux_losses[0] - 1e-3  # it trained (the LoRA run too): not a trivial match
    last = result.history[-1].metrics
    for name in ("nll_loss", "log_odds_ratio", "chosen_reward", "rejected_reward", "reward_margin", "accuracy"):
        assert name in last, sorted(last)  # TRL's rewards/chosen etc. under readable names
    assert (Path(config.output_dir) / "final").is_dir()


def test_a_trl_that_moved_orpo_stops_the_run_in_one_line_naming_its_version_and_flux_orpo(monkeypatch):
    import trl

    from flux_core import FluxError
    from flux_core.registry import get_registry

    monkeypatch.setattr(trl, "__version__", "1.17.0")
    monkeypatch.setitem(sys.modules, "trl.experimental.orpo", None)  # as if TRL had moved it
    monkeypatch.delitem(sys.modules, "flux_orpo.trl_experimental", raising=False)

    with pytest.raises(FluxError) as stop:
        get_registry().get_algorithm("orpo").load_runner()  # what a run does first
    message = str(stop.value)
    assert "\n" not in message
    assert message.startswith(
        "flux-orpo cannot run on TRL 1.17.0: it needs ORPOConfig, ORPOTrainer from trl.experimental.orpo"
    )
    assert message.endswith("install a tested TRL: pip install 'trl>=1.16,<1.17'")


def test_a_trl_block_is_checked_against_orpo_config(dpo_config):
    from flux_core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trl\.beta: is set by Flux: use algorithm\.beta"):
        orpo_config(dpo_config, trl={"beta": 0.5})
    with pytest.raises(ConfigError, match=r"trl\.loss_type: not a field of ORPOConfig"):
        orpo_config(dpo_config, trl={"loss_type": "sigmoid"})


def test_flux_plugins_lists_orpo(capsys, monkeypatch):
    from flux_core.cli import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI installs its one-line printer
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out

    assert "orpo (flux-orpo 0.1.0): register_algorithms" in listing
    assert "orpo: Odds Ratio Preference Optimization" in listing
    assert "[data_format=preferences]" in listing


def test_flux_eval_scores_held_out_pairs_with_orpos_loss(dpo_config):
    from flux_core.evaluate import evaluate

    config = orpo_config(dpo_config)
    metrics = evaluate(config, config.model_path, make_shaped_pairs(8, 0, "explicit"))  # one eval batch

    for name in ("loss", "nll_loss", "log_odds_ratio", "accuracy", "reward_margin", "chosen_reward"):
        assert name in metrics, sorted(metrics)
    assert "runtime" not in metrics and "eval_loss" not in metrics
    # ORPO's loss: the SFT loss minus beta x the mean log-sigmoid of the log odds ratio
    assert metrics["loss"] == pytest.approx(metrics["nll_loss"] - 0.2 * metrics["log_odds_ratio"], rel=1e-5)
