"""Entry point of flux-grpo: registers the ``grpo`` algorithm.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins. Rewards come from ``register_rewards`` (built-ins live in
``flux_core.online.builtin_rewards``), shared with PPO.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_grpo.config import GRPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("reward", ("reward",), "mean reward of a completion"),
    PlotPanel("KL to the reference", ("kl",), "KL per token (nats)"),
    PlotPanel("entropy", ("entropy",), "entropy per token (nats)"),
    PlotPanel("completion length", ("completion_length",), "tokens"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="grpo",
            config_schema=GRPOAlgorithmConfig,
            runner="flux_grpo.runner:GRPORunner",
            trl_relies_on="flux_grpo.trl_reliance:TRL_RELIES_ON",
            data_format="prompts",
            trl_config="trl:GRPOConfig",
            description="Group Relative Policy Optimization on prompts scored by rewards (TRL GRPOTrainer)",
            plot_panels=PLOT_PANELS,
        )
    )
