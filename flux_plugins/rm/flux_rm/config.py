"""The ``algorithm:`` block of a reward-model run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# RewardConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": "is set by Flux: use max_length",
    "dataset_num_proc": "is set by Flux: use dataset_num_proc",
    "center_rewards_coefficient": "is set by Flux: use algorithm.center_rewards_coefficient",
}


class RewardModelAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: reward_model, ...}``; other RewardConfig fields go in the ``trl:`` block."""

    name: Literal["reward_model"] = Field(
        description="Selects reward-model training on preference pairs (package flux-rm)."
    )
    center_rewards_coefficient: float | None = Field(
        default=None,
        ge=0,
        description="Weight of a penalty on the squared mean reward, which keeps scores centred on 0 "
        "(0.01 is the usual value); unset: no penalty.",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on a reward-model run."""
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            return ["reward_model has no rollouts: adaptive_async.enabled is ignored"]
        return []
