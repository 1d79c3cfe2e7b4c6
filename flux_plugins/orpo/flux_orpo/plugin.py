"""Entry point of flux-orpo: registers the ``orpo`` algorithm on Flux's preference pairs.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_orpo.config import ORPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("loss", ("loss", "eval_loss"), "ORPO loss (SFT + λ·odds ratio)"),
    PlotPanel("SFT loss", ("nll_loss",), "NLL of the chosen completion"),
    PlotPanel("log odds ratio", ("log_odds_ratio",), "log σ(log odds chosen − log odds rejected)"),
    PlotPanel("reward margin", ("reward_margin",), "chosen − rejected reward (β·mean log π)"),
    PlotPanel("accuracy", ("accuracy",), "share of pairs with chosen > rejected"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="orpo",
            config_schema=ORPOAlgorithmConfig,
            runner="flux_orpo.runner:ORPORunner",
            trl_relies_on="flux_orpo.trl_reliance:TRL_RELIES_ON",
            data_format="preferences",
            trl_config="flux_orpo.trl_experimental:ORPOConfig",
            evaluator="flux_orpo.evaluate:evaluate_pairs",
            plot_panels=PLOT_PANELS,
            description="Odds Ratio Preference Optimization on preference pairs, no reference model (TRL ORPOTrainer)",
        )
    )
