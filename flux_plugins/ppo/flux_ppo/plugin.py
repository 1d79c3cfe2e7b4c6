"""Entry point of flux-ppo: registers the ``ppo`` algorithm and its policy loss.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, PlotPanel, hookimpl
from flux_ppo.config import PPOAlgorithmConfig

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


PLOT_PANELS = (
    PlotPanel("reward", ("reward", "rlhf_reward"), "reward of a completion"),
    PlotPanel("KL to the reference", ("kl",), "KL per completion (nats, summed over tokens)"),
    PlotPanel("entropy", ("entropy",), "entropy per token (nats)"),
    PlotPanel("completion length", ("completion_length",), "tokens"),
)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="ppo",
            config_schema=PPOAlgorithmConfig,
            runner="flux_ppo.runner:PPORunner",
            trl_relies_on="flux_ppo.trl_reliance:TRL_RELIES_ON",
            takes_losses=True,
            data_format="prompts",
            trl_config=None,  # TRL >= 1.13 has no PPOTrainer; Flux runs the loop itself
            description="Actor-critic PPO with a value model, GAE and a KL penalty (InstructGPT recipe)",
            plot_panels=PLOT_PANELS,
        )
    )


@hookimpl
def register_losses(register):
    from flux_ppo import losses  # torch is imported inside the loss functions only

    for name, fn in losses.PPO_LOSSES.items():
        register(name, fn, algorithm="ppo")
