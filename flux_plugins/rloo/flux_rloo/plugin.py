"""Entry point of flux-rloo: registers the ``rloo`` algorithm on prompts scored by rewards.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins. Rewards come from ``register_rewards`` (built-ins live in
``flux_core.online.builtin_rewards``), shared with GRPO and PPO.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_rloo.config import RLOOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("reward", ("reward",), "mean reward of a completion"),
    PlotPanel("KL to the reference", ("kl",), "KL per sequence (nats)"),
    PlotPanel("entropy", ("entropy",), "entropy per token (nats)"),
    PlotPanel("completion length", ("completion_length",), "tokens"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="rloo",
            config_schema=RLOOAlgorithmConfig,
            runner="flux_rloo.runner:RLOORunner",
            trl_relies_on="flux_rloo.trl_reliance:TRL_RELIES_ON",
            data_format="prompts",
            trl_config="trl:RLOOConfig",
            description="REINFORCE Leave-One-Out on prompts scored by rewards (TRL RLOOTrainer)",
            plot_panels=PLOT_PANELS,
        )
    )
