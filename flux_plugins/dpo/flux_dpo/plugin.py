"""Entry point of flux-dpo: registers the ``dpo`` algorithm and TRL's DPO losses.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_dpo.config import DPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "DPO loss"),
    PlotPanel("reward margin", ("reward_margin",), "chosen − rejected reward"),
    PlotPanel("chosen vs rejected reward", ("chosen_reward", "rejected_reward"), "implicit reward β·log(π/π_ref)"),
    PlotPanel("accuracy", ("accuracy",), "share of pairs with chosen > rejected"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="dpo",
            config_schema=DPOAlgorithmConfig,
            runner="flux_dpo.runner:DPORunner",
            trl_relies_on="flux_dpo.trl_reliance:TRL_RELIES_ON",
            takes_losses=True,
            data_format="preferences",
            trl_config="trl:DPOConfig",
            description="Direct Preference Optimization on preference pairs (TRL DPOTrainer)",
            evaluator="flux_dpo.evaluate:evaluate_preferences",
            plot_panels=PLOT_PANELS,
        )
    )


@hookimpl
def register_losses(register):
    from flux_dpo import losses  # torch is imported inside the loss functions only

    for name, fn in losses.TRL_LOSSES.items():
        register(name, fn, algorithm="dpo")


@hookimpl(trylast=True)
def collate_batch(config, tokenizer, algorithm):
    """``algorithm.collation`` packed (or auto where packing pays) -> the padding-free collator; else TRL's padded one."""
    if algorithm != "dpo":
        return None
    from flux_dpo.collators import PackedPreferenceCollator, resolve_collation

    packed, _ = resolve_collation(config.algorithm.collation)
    if not packed:
        return None

    return PackedPreferenceCollator(
        pad_token_id=tokenizer.pad_token_id,
        max_length=config.max_length,
        truncation_mode=config.trl.get("truncation_mode", "keep_start"),
    )
