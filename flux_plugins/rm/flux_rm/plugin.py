"""Entry point of flux-rm: registers the ``reward_model`` algorithm.

It trains on core's ``preferences`` format, so every shape DPO accepts (explicit or
implicit prompt, strings or chat, hh-rlhf, trl-lib, H4) is normalised and checked by
core exactly as for DPO. Importing this module must stay cheap (no torch, no TRL).
"""

from flux_core import Algorithm, hookimpl
from flux_rm.config import RewardModelAlgorithmConfig


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="reward_model",
            config_schema=RewardModelAlgorithmConfig,
            runner="flux_rm.runner:RewardModelRunner",
            data_format="preferences",
            trl_config="trl:RewardConfig",
            evaluator="flux_rm.evaluate:evaluate_pairs",
            description="Reward model (a one-score sequence classifier) trained on preference pairs "
            "(TRL RewardTrainer); GRPO/PPO use it as rewards: [{model: DIR}]",
        )
    )
