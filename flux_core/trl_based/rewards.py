"""Flux rewards as TRL's online trainers (GRPOTrainer, RLOOTrainer) call them, and the metric names
those trainers log each reward under."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flux_core.online.rewards import RewardFunction

# Arguments TRL's GRPOTrainer and RLOOTrainer pass to reward functions on top of the dataset columns. They
# are TRL internals, not columns: a Flux reward gets the same arguments under every algorithm.
TRL_INTERNAL_ARGUMENTS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


class TRLReward:
    """A Flux reward as TRL's ``reward_funcs`` calls it: TRL's internal arguments dropped,
    ``__name__`` (the name TRL logs the reward under) kept."""

    def __init__(self, reward: RewardFunction):
        self.reward = reward
        self.__name__ = reward.__name__

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        columns = {key: value for key, value in columns.items() if key not in TRL_INTERNAL_ARGUMENTS}
        return self.reward(prompts, completions, **columns)


def reward_metric_names(reward_functions: Sequence[RewardFunction]) -> dict[str, str]:
    """TRL's ``rewards/<name>/mean`` and ``/std`` -> the Flux metrics ``reward_<name>`` and ``reward_<name>_std``."""
    names = {}
    for reward in reward_functions:
        names[f"rewards/{reward.name}/mean"] = f"reward_{reward.name}"
        names[f"rewards/{reward.name}/std"] = f"reward_{reward.name}_std"
    return names
