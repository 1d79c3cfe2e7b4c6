"""The ``algorithm:`` block of an RLOO run.

RLOO's ``batch_size`` counts *completions* per optimizer step, as GRPO's does: each step trains on
``batch_size / num_generations`` prompts, each sampled ``num_generations`` times. A completion's
baseline is the mean reward of the other completions of its prompt (leave-one-out).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from flux_core import (
    SHARED_OWNED_TRL_FIELDS,
    AlgorithmConfig,
    RewardSpec,
    check_unique_labels,
    group_steps_per_epoch,
)

_OWN = "is set by Flux: use "
# RLOOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
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
    "num_iterations": _OWN + "algorithm.num_iterations",
    "normalize_advantages": _OWN + "algorithm.normalize_advantages",
    "reward_clip_range": _OWN + "algorithm.reward_clip_range",
    "mask_truncated_completions": _OWN + "algorithm.mask_truncated_completions",
    "reward_weights": _OWN + "algorithm.rewards[].weight",
}


class RLOOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: rloo, ...}``; other RLOOConfig fields go in the ``trl:`` block."""

    name: Literal["rloo"] = Field(description="Selects REINFORCE Leave-One-Out (package flux-rloo).")
    rewards: list[RewardSpec] = Field(
        min_length=1,
        description="Rewards scoring each completion, summed by weight: [{name: ..., weight: 1.0, kwargs: {...}}] "
        "or [{model: PATH}] for a sequence-classification reward model; the same rewards as GRPO. `flux plugins` "
        "lists the names.",
    )
    num_generations: int = Field(
        default=4,
        ge=2,
        description="Completions sampled per prompt; each one's baseline is the mean reward of the others.",
    )
    max_completion_length: PositiveInt = Field(default=512, description="Most tokens generated per completion.")
    temperature: float = Field(
        default=1.0, gt=0, description="Sampling temperature; the leave-one-out baseline needs diverse completions."
    )
    top_p: float = Field(
        default=1.0, gt=0, le=1, description="Nucleus sampling threshold in (0, 1]; 1 keeps every token."
    )
    beta: float = Field(
        default=0.05,
        ge=0,
        description="KL coefficient: beta x the sequence's KL to the initial model is subtracted from its reward "
        "(TRL's default 0.05). 0 loads no reference model and reports no `kl` metric.",
    )
    epsilon: float = Field(
        default=0.2, gt=0, description="Clipping range of the sequence probability ratio (lower bound: 1 - epsilon)."
    )
    epsilon_high: float | None = Field(
        default=None, gt=0, description="Upper clipping range (1 + epsilon_high); defaults to epsilon."
    )
    num_iterations: PositiveInt = Field(
        default=1, description="Optimizer passes over each batch of rollouts; above 1 the clipping matters."
    )
    normalize_advantages: bool = Field(
        default=False,
        description="Scale advantages to mean 0 and standard deviation 1 over each generation batch.",
    )
    reward_clip_range: tuple[float, float] | None = Field(
        default=None,
        description="Clip each completion's weighted reward total to [low, high] before the KL penalty and baseline; "
        "none: no clip.",
    )
    mask_truncated_completions: bool = Field(
        default=False,
        description="Leave completions cut off at max_completion_length out of the loss (DAPO recommends it).",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    @model_validator(mode="after")
    def _check(self) -> "RLOOAlgorithmConfig":
        check_unique_labels(self.rewards)
        if self.reward_clip_range is not None and self.reward_clip_range[0] >= self.reward_clip_range[1]:
            raise ValueError(f"reward_clip_range {list(self.reward_clip_range)} must be [low, high] with low < high")
        return self

    def steps_per_epoch(self, config: Any, num_examples: int, world_size: int) -> int:
        """Optimizer steps in one pass over ``num_examples`` prompts, as TRL's RLOOTrainer runs them
        (:func:`flux_core.group_steps_per_epoch`)."""
        return group_steps_per_epoch(config, num_examples, world_size)

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but probably not what the user meant."""
        messages = []
        if config.adaptive_async.enabled:
            messages.append(
                "RLOO generates in the training process (TRL's RLOOTrainer has no rollout seam): "
                "adaptive_async.enabled is ignored; GRPO takes a rollout server"
            )
        if config.max_length != type(config).model_fields["max_length"].default:
            messages.append(
                "max_length is not used by RLOO: completions are capped by algorithm.max_completion_length "
                "and prompts are not truncated"
            )
        return messages
