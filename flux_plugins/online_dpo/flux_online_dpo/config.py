"""The ``algorithm:`` block of an online DPO run.

Online DPO's ``batch_size`` counts *prompts* per optimizer step: each prompt is sampled twice, the
rewards rank the two completions, and the DPO loss trains on that fresh pair.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig, ConfigError, RewardSpec, check_unique_labels

_OWN = "is set by Flux: use "
# OnlineDPOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": _OWN + "max_length",
    "beta": _OWN + "algorithm.beta",
    "loss_type": _OWN + "algorithm.loss_type",
    "max_new_tokens": _OWN + "algorithm.max_completion_length",
    "temperature": _OWN + "algorithm.temperature",
    "top_p": _OWN + "algorithm.top_p",
    "missing_eos_penalty": _OWN + "algorithm.missing_eos_penalty",
    "reward_weights": _OWN + "algorithm.rewards[].weight",
    "reward_model_path": _OWN + "algorithm.rewards: [{model: PATH}]",
}


class OnlineDPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: online_dpo, ...}``; other OnlineDPOConfig fields go in the ``trl:`` block."""

    name: Literal["online_dpo"] = Field(description="Selects online DPO (package flux-online-dpo).")
    rewards: list[RewardSpec] = Field(
        min_length=1,
        description="Rewards that rank the two completions of each prompt, summed by weight: "
        "[{name: ..., weight: 1.0, kwargs: {...}}], a function by import path ({name: module:function}), or "
        "[{model: PATH}] for a sequence-classification reward model (a flux-rm checkpoint). The same rewards "
        "as GRPO; `flux plugins` lists the names.",
    )
    beta: float = Field(
        default=0.1, gt=0, description="Strength of the pull towards the reference (initial) model, as in DPO."
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        default="sigmoid",
        description="The DPO loss on each sampled pair: sigmoid (standard DPO) or ipo (IPO's squared loss).",
    )
    max_completion_length: PositiveInt = Field(default=64, description="Most tokens generated per completion.")
    temperature: float = Field(
        default=0.9,
        gt=0,
        description="Sampling temperature (TRL's default 0.9); must be > 0: the two completions of a prompt must "
        "differ for the rewards to rank them.",
    )
    top_p: float = Field(
        default=1.0, gt=0, le=1, description="Nucleus sampling threshold in (0, 1]; 1 keeps every token."
    )
    missing_eos_penalty: float | None = Field(
        default=None,
        ge=0,
        description="Subtracted from the reward of a completion cut off at max_completion_length (no end-of-sequence "
        "token); pushes the policy towards finishing its answers. Unset: no penalty.",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    @model_validator(mode="after")
    def _check(self) -> "OnlineDPOAlgorithmConfig":
        check_unique_labels(self.rewards)
        return self

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but probably not what the user meant."""
        messages = []
        if config.adaptive_async.enabled:
            messages.append("adaptive_async is GRPO's: online DPO generates each batch right before its step (ignored)")
        if config.max_length <= self.max_completion_length:
            messages.append(
                f"max_length {config.max_length} <= algorithm.max_completion_length {self.max_completion_length}: "
                "TRL cuts prompt + completion to max_length from the left, so prompts are cut away"
            )
        return messages


def check_run(config: Any) -> None:
    """Raise ConfigError for what an online DPO run cannot do, before any model loads."""
    if config.eval_data is not None or config.eval_fraction:
        key = "eval_data" if config.eval_data is not None else "eval_fraction"
        raise ConfigError(
            f"{key}: online DPO has no held-out loss (TRL's OnlineDPOTrainer only trains); drop it, and score "
            "checkpoints with `flux eval CHECKPOINT --data PROMPTS` (mean reward of their completions)"
        )
    if config.trl.get("use_vllm") and config.sglang.base_url:
        raise ConfigError("sglang.base_url and trl.use_vllm both pick a rollout server; keep one")
