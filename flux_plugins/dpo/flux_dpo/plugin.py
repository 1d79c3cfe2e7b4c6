"""Entry point of flux-dpo: registers the ``dpo`` algorithm and TRL's DPO losses.

Importing this module must stay cheap (no torch, no TRL): it runs whenever Flux
lists or loads plugins.
"""

from flux_core.hookspecs import hookimpl
from flux_core.registry import Algorithm

from flux_dpo.config import DPOAlgorithmConfig


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="dpo",
            config_schema=DPOAlgorithmConfig,
            runner="flux_dpo.runner:DPORunner",
            data_format="preferences",
            trl_config="trl:DPOConfig",
            description="Direct Preference Optimization on preference pairs (TRL DPOTrainer)",
        )
    )


@hookimpl
def register_losses(register):
    from flux_dpo import losses  # torch is imported inside the loss functions only

    for name, fn in losses.TRL_LOSSES.items():
        register(name, fn, algorithm="dpo")
