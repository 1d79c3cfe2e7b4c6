"""Entry point of flux-grpo: registers the ``grpo`` algorithm.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins. Rewards come from ``register_rewards`` (built-ins live in
``flux_core.online.builtin_rewards``), shared with PPO.
"""

from flux_core import Algorithm, hookimpl
from flux_grpo.config import GRPOAlgorithmConfig


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="grpo",
            config_schema=GRPOAlgorithmConfig,
            runner="flux_grpo.runner:GRPORunner",
            data_format="prompts",
            trl_config="trl:GRPOConfig",
            description="Group Relative Policy Optimization on prompts scored by rewards (TRL GRPOTrainer)",
        )
    )
