"""Entry point of flux-ppo: registers the ``ppo`` algorithm and its policy loss.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core import Algorithm, hookimpl
from flux_ppo.config import PPOAlgorithmConfig


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="ppo",
            config_schema=PPOAlgorithmConfig,
            runner="flux_ppo.runner:PPORunner",
            takes_losses=True,
            data_format="prompts",
            trl_config=None,  # TRL >= 1.13 has no PPOTrainer; Flux runs the loop itself
            description="Actor-critic PPO with a value model, GAE and a KL penalty (InstructGPT recipe)",
        )
    )


@hookimpl
def register_losses(register):
    from flux_ppo import losses  # torch is imported inside the loss functions only

    for name, fn in losses.PPO_LOSSES.items():
        register(name, fn, algorithm="ppo")
