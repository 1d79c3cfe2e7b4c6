"""Entry point of flux-cpo: registers the ``cpo`` algorithm (CPO, SimPO, AlphaPO) on Flux's preference pairs.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_cpo.config import CPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "CPO / SimPO loss"),
    PlotPanel("reward margin", ("reward_margin",), "chosen − rejected reward (β·log π)"),
    PlotPanel("chosen vs rejected reward", ("chosen_reward", "rejected_reward"), "reward β·log π"),
    PlotPanel("accuracy", ("accuracy",), "share of pairs with chosen > rejected"),
    PlotPanel("SFT loss", ("nll_loss",), "NLL of the chosen completion"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="cpo",
            config_schema=CPOAlgorithmConfig,
            runner="flux_cpo.runner:CPORunner",
            trl_relies_on="flux_cpo.trl_reliance:TRL_RELIES_ON",
            data_format="preferences",
            trl_config="flux_cpo.trl_experimental:CPOConfig",
            evaluator="flux_cpo.evaluate:evaluate_pairs",
            plot_panels=PLOT_PANELS,
            description="Contrastive Preference Optimization on preference pairs, no reference model; "
            "loss_type: simpo is SimPO (TRL CPOTrainer)",
        )
    )
