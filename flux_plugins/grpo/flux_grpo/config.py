"""The ``algorithm:`` block of a GRPO run, and the checks that need the whole config.

GRPO's ``batch_size`` counts *completions* per optimizer step, as TRL's
``per_device_train_batch_size`` does: each step trains on ``batch_size / num_generations``
prompts, each sampled ``num_generations`` times.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from flux_core import (
    SHARED_OWNED_TRL_FIELDS,
    AlgorithmConfig,
    RewardSpec,
    check_group_batches,
    check_unique_labels,
    group_steps_per_epoch,
    rollout_warnings,
)

# Every loss TRL 1.16's GRPOTrainer implements (GRPOConfig.loss_type).
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
# Losses that sum per-token terms: at sequence-level importance sampling they weight
# each sequence by its length (TRL warns; GSPO's setup is loss_type grpo).
TOKEN_SUM_LOSSES = ("bnpo", "dr_grpo", "dapo", "cispo")

_OWN = "is set by Flux: use "
# GRPOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "per_device_train_batch_size": _OWN + "batch_size (completions per step)",
    "num_generations": _OWN + "algorithm.num_generations",
    "max_completion_length": _OWN + "algorithm.max_completion_length",
    "temperature": _OWN + "algorithm.temperature",
    "top_p": _OWN + "algorithm.top_p",
    "beta": _OWN + "algorithm.beta",
    "epsilon": _OWN + "algorithm.epsilon",
    "epsilon_high": _OWN + "algorithm.epsilon_high",
    "loss_type": _OWN + "algorithm.loss_type",
    "scale_rewards": _OWN + "algorithm.scale_rewards",
    "importance_sampling_level": _OWN + "algorithm.importance_sampling_level",
    "num_iterations": _OWN + "algorithm.num_iterations",
    "mask_truncated_completions": _OWN + "algorithm.mask_truncated_completions",
    "reward_weights": _OWN + "algorithm.rewards[].weight",
}


class GRPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: grpo, ...}``."""

    name: Literal["grpo"] = Field(description="Selects Group Relative Policy Optimization (package flux-grpo).")
    rewards: list[RewardSpec] = Field(
        min_length=1,
        description="Rewards scoring each completion, summed by weight: [{name: ..., weight: 1.0, kwargs: {...}}] "
        "or [{model: PATH}] for a sequence-classification reward model. `flux plugins` lists the names.",
    )
    num_generations: int = Field(
        default=8,
        ge=2,
        description="Completions sampled per prompt; advantages compare completions of the same prompt (the group).",
    )
    max_completion_length: PositiveInt = Field(default=512, description="Most tokens generated per completion.")
    temperature: float = Field(
        default=1.0, gt=0, description="Sampling temperature; GRPO needs diverse completions, so it must be > 0."
    )
    top_p: float = Field(
        default=1.0, gt=0, le=1, description="Nucleus sampling threshold in (0, 1]; 1 keeps every token."
    )
    beta: float = Field(
        default=0.0,
        ge=0,
        description="KL coefficient towards the initial model. 0 (default, as in TRL) loads no reference model "
        "and reports no `kl` metric; DeepSeek-R1 used 0.001.",
    )
    epsilon: float = Field(
        default=0.2, gt=0, description="Clipping range of the probability ratio (lower bound: 1 - epsilon)."
    )
    epsilon_high: float | None = Field(
        default=None,
        gt=0,
        description="Upper clipping range (1 + epsilon_high); defaults to epsilon. DAPO recommends 0.28; "
        "with loss_type cispo it is the ratio cap (ScaleRL: 5.0).",
    )
    loss_type: Literal[LOSS_TYPES] = Field(  # type: ignore[valid-type]
        default="dapo",
        description="How token losses are aggregated: grpo (per-sequence mean, length-biased), dr_grpo (constant "
        "normaliser), dapo (tokens in the global batch; default), bnpo (tokens in the local batch), cispo "
        "(clipped importance weights), sapo (soft gate), luspo (length-unbiased sequence loss; use with "
        "importance_sampling_level: sequence), vespo (soft sequence-level weights).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Divide advantages by the reward std of each group (group), of the whole batch (batch), "
        "or not at all (none, as Dr. GRPO recommends).",
    )
    importance_sampling_level: Literal["token", "sequence"] = Field(
        default="token",
        description="Probability ratios per token, or one per sequence (sequence = GSPO).",
    )
    num_iterations: PositiveInt = Field(
        default=1, description="Optimizer passes over each batch of rollouts (mu in the GRPO paper)."
    )
    mask_truncated_completions: bool = Field(
        default=False,
        description="Leave completions cut off at max_completion_length out of the loss (DAPO recommends it).",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    @model_validator(mode="after")
    def _check(self) -> "GRPOAlgorithmConfig":
        check_unique_labels(self.rewards)
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            raise ValueError("loss_type luspo is a sequence-level loss: set importance_sampling_level: sequence")
        if self.loss_type == "vespo" and self.importance_sampling_level != "token":
            raise ValueError(
                "loss_type vespo computes sequence-level weights itself: keep importance_sampling_level: token"
            )
        return self

    def steps_per_epoch(self, config: Any, num_examples: int, world_size: int) -> int:
        """Optimizer steps in one pass over ``num_examples`` prompts, as TRL's GRPOTrainer runs them
        (:func:`flux_core.group_steps_per_epoch`)."""
        return group_steps_per_epoch(config, num_examples, world_size)

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but probably not what the user meant."""
        messages = rollout_warnings(config)
        if self.importance_sampling_level == "sequence" and self.loss_type in TOKEN_SUM_LOSSES:
            messages.append(
                f"loss_type {self.loss_type} sums token terms, so with importance_sampling_level: sequence each "
                "sequence is weighted by its length; GSPO uses loss_type: grpo"
            )
        if config.max_length != type(config).model_fields["max_length"].default:
            messages.append(
                "max_length is not used by GRPO: completions are capped by algorithm.max_completion_length "
                "and prompts are not truncated"
            )
        return messages


def check_run(config: Any) -> None:
    """Raise ConfigError for settings TRL would reject, in Flux's terms (called before TRL)."""
    check_group_batches(config, "GRPO")
