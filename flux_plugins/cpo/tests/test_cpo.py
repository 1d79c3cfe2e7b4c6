"""flux-cpo: per-step losses equal raw TRL CPOTrainer's for CPO and SimPO (full and LoRA, text and chat pairs);
``loss_type: simpo`` is SimPO as its paper defines it; settings a loss ignores are said; `flux plugins` lists it."""

import sys
import warnings
from pathlib import Path

import pytest
from make_preferences import make_shaped_pairs
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl

from flux_core.config import FluxConfig
from flux_core.data.load import load_data
from flux_core.errors import ConfigError
from flux_core.trainer import FluxTrainer

STEPS = 3


def cpo_dict(**algorithm) -> dict:
    """A CPO config that loads no model (for the schema tests)."""
    return {"model_path": "m", "output_dir": "out", "algorithm": {"name": "cpo", **algorithm}}


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step training losses of an unmodified CPOTrainer with the same settings, in fp32."""
    import torch
    from flux_cpo.trl_experimental import CPOConfig, CPOTrainer
    from transformers import AutoModelForCausalLM

    algorithm = config.algorithm
    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(
        CPOConfig,
        config,
        STEPS,
        loss_type=algorithm.loss_type,
        beta=algorithm.beta,
        cpo_alpha=algorithm.sft_weight,
        simpo_gamma=algorithm.simpo_gamma,
    )
    return train_raw_trl(CPOTrainer, args, model, config.model_path, records, lora)


@pytest.mark.parametrize(
    "lora, loss_type, shape",
    [
        (False, "sigmoid", "explicit"),
        (False, "simpo", "conversational"),
        (True, "simpo", "explicit"),
    ],
    ids=["cpo-full", "simpo-full-chat", "simpo-lora"],
)
def test_per_step_losses_match_raw_trl(dpo_config, lora, loss_type, shape):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    algorithm = {"name": "cpo", "loss_type": loss_type, "beta": 2.0 if loss_type == "simpo" else 0.1}
    # LoRA moves slower: a larger step makes "it trained" visible within STEPS
    learning_rate = 5e-3 if lora else 5e-4
    config = dpo_config(algorithm, num_steps=STEPS, precision="fp32", lora=lora_block, learning_rate=learning_rate)
    rows = make_shaped_pairs(32, 0, shape)

    result = FluxTrainer(config, show_progress=False).fit(prompts=rows)
    flux_losses = result.metric("loss")
    trl_losses = raw_trl_losses(config, load_data(rows, "preferences").to_list(), lora)
    print(f"CPO {loss_type} {shape} lora={lora}: flux {flux_losses} trl {trl_losses}")

    assert len(flux_losses) == len(trl_losses) == STEPS
    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert flux_losses[-1] < flux_losses[0] - 1e-3  # it trained (the LoRA run too): not a trivial match
    last = result.history[-1].metrics
    for name in ("chosen_reward", "rejected_reward", "reward_margin", "accuracy", "nll_loss"):
        assert name in last, sorted(last)  # TRL's rewards/chosen etc. under readable names
    assert (Path(config.output_dir) / "final").is_dir()


@pytest.mark.parametrize(
    "algorithm, sft_weight",
    [
        ({}, 1.0),  # CPO: the NLL term on chosen is part of the method
        ({"loss_type": "simpo"}, 0.0),  # SimPO as its paper defines it: no SFT term
        ({"loss_type": "simpo", "cpo_alpha": 0.5}, 0.5),  # CPO-SimPO
        ({"loss_type": "alphapo", "alpha": 0.25}, 0.0),
        ({"loss_type": "ipo"}, 1.0),
    ],
)
def test_the_sft_weight_follows_the_loss_type(algorithm, sft_weight):
    assert FluxConfig.from_dict(cpo_dict(**algorithm)).algorithm.sft_weight == sft_weight


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "simpo", "alphapo"])
def test_every_trl_loss_type_reaches_cpo_config(loss_type, tmp_path):
    from flux_cpo.runner import build_cpo_args

    config = FluxConfig.from_dict(
        {**cpo_dict(loss_type=loss_type, alpha=0.25), "output_dir": str(tmp_path), "gradient_checkpointing": False}
    )
    args = build_cpo_args(config, "fp32", model=None)

    # TRL's alphapo is its simpo loss with the AlphaPO reward shape and no SFT term
    assert args.loss_type == ("simpo" if loss_type == "alphapo" else loss_type)
    assert args.cpo_alpha == config.algorithm.sft_weight and args.alpha == 0.25


def test_alphapo_with_an_sft_term_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"algorithm: loss_type alphapo has no SFT term .*drop cpo_alpha: 1\.0"):
        FluxConfig.from_dict(cpo_dict(loss_type="alphapo", cpo_alpha=1.0))


@pytest.mark.parametrize(
    "algorithm, message",
    [
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing=0.1 has no effect with loss_type hinge"),
        ({"simpo_gamma": 1.0}, "simpo_gamma has no effect with loss_type sigmoid"),
        ({"loss_type": "alphapo"}, "loss_type alphapo with alpha 0 is SimPO"),
    ],
)
def test_settings_the_loss_ignores_are_one_warning(algorithm, message):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FluxConfig.from_dict(cpo_dict(**algorithm))
    assert [str(warning.message) for warning in caught if message in str(warning.message)], message
    assert len(caught) == 1, [str(warning.message) for warning in caught]


def test_an_unknown_loss_type_names_the_choices():
    with pytest.raises(ConfigError, match=r"algorithm\.loss_type: .*'sigmoid', 'hinge', 'ipo', 'simpo' or 'alphapo'"):
        FluxConfig.from_dict(cpo_dict(loss_type="dpo"))


def test_flux_plugins_lists_cpo(capsys, monkeypatch):
    from flux_core.cli import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI installs its one-line printer
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out

    assert "cpo (flux-cpo 0.1.0): register_algorithms" in listing
    assert "cpo: Contrastive Preference Optimization" in listing and "SimPO" in listing


def test_a_trl_that_moved_cpo_stops_the_run_in_one_line(monkeypatch):
    import trl

    from flux_core import FluxError
    from flux_core.registry import get_registry

    monkeypatch.setattr(trl, "__version__", "1.17.0")
    monkeypatch.setitem(sys.modules, "trl.experimental.cpo", None)  # as if TRL had moved it
    monkeypatch.delitem(sys.modules, "flux_cpo.trl_experimental", raising=False)

    with warnings.catch_warnings(), pytest.raises(FluxError) as stop:
        warnings.simplefilter("ignore")
        get_registry().get_algorithm("cpo").load_runner()  # what a run does first
    assert str(stop.value).startswith(
        "flux-cpo cannot run on TRL 1.17.0: it needs CPOConfig, CPOTrainer from trl.experimental.cpo"
    )


def test_flux_eval_scores_held_out_pairs_with_the_loss_type(dpo_config):
    from flux_core.evaluate import evaluate

    rows = make_shaped_pairs(8, 0, "explicit")
    sigmoid = dpo_config({"name": "cpo"}, precision="fp32")
    simpo = dpo_config({"name": "cpo", "loss_type": "simpo", "beta": 2.0}, precision="fp32")

    cpo_metrics = evaluate(sigmoid, sigmoid.model_path, rows)
    simpo_metrics = evaluate(simpo, simpo.model_path, rows)

    for name in ("loss", "nll_loss", "accuracy", "reward_margin", "chosen_reward", "rejected_reward"):
        assert name in cpo_metrics, sorted(cpo_metrics)
    # the same model, another loss: CPO adds the SFT term (nll_loss); SimPO has none (TRL skips it: 0)
    assert cpo_metrics["loss"] > cpo_metrics["nll_loss"] > 0
    assert simpo_metrics["nll_loss"] == 0 and 0 < simpo_metrics["loss"] < cpo_metrics["loss"]
