"""The ``algorithm:`` block of a PPO run, with the defaults of the InstructGPT recipe."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from flux_core import AlgorithmConfig, FluxError, RewardSpec, check_unique_labels, get_registry


class PPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: ppo, ...}``.

    One training step is one PPO iteration: sample ``batch_size * num_generations``
    completions, score them, compute advantages, then ``ppo_epochs`` passes over that
    rollout in ``num_minibatches`` minibatches (one optimizer update each).
    """

    name: Literal["ppo"] = Field(description="Selects actor-critic PPO (package flux-ppo).")

    # ------------------------------------------------------------- rewards
    rewards: list[RewardSpec] = Field(
        default_factory=list,
        description="Registered rewards and/or reward models ({model: DIR}) scoring each completion; "
        "the score is their weighted sum (same shape as GRPO's).",
    )
    reward_model: str | None = Field(
        default=None,
        description="Directory of a sequence-classification reward model; shorthand for adding "
        "{model: DIR} to rewards.",
    )
    reward_model_input: Literal["tokens", "text"] = Field(
        default="tokens",
        description="How a reward model ({model: DIR}) sees a completion. tokens: the sampled prompt + completion "
        "ids themselves, as TRL's PPOTrainer scored them, whenever the reward model has the policy's vocabulary "
        "and chat template (else text); text: prompt + decoded completion, re-tokenised (as GRPO does).",
    )
    missing_eos_penalty: float | None = Field(
        default=None,
        ge=0,
        description="Subtract this from the score of a completion cut at max_completion_length without "
        "an EOS token (None: no penalty). Discourages rambling, as in the InstructGPT recipe.",
    )

    # ------------------------------------------------------------- rollouts
    num_generations: PositiveInt = Field(
        default=1, description="Completions sampled per prompt; the rollout batch is batch_size * num_generations."
    )
    max_completion_length: PositiveInt = Field(default=64, description="Most tokens generated per completion.")
    temperature: float = Field(
        default=1.0,
        gt=0,
        description="Sampling temperature; log-probs for the loss use the same temperature, so the "
        "importance ratios are those of the distribution actually sampled from.",
    )
    seed_per_prompt: bool = Field(
        default=False,
        description="Sample each prompt's completions with their own random seed, derived from seed, the "
        "step and the prompt's index in the global batch: the completions then do not depend on how prompts "
        "are batched or split over processes, so N processes sample what one does (one generate call per "
        "prompt: slower). Local generation only.",
    )

    # ------------------------------------------------------------- KL to the reference
    kl_coef: float = Field(
        default=0.05, ge=0, description="Weight of the per-token KL penalty to the reference policy (beta)."
    )
    kl_estimator: Literal["k1", "k3"] = Field(
        default="k1",
        description="Per-token KL estimate: k1 = log-ratio (InstructGPT), k3 = non-negative, lower variance.",
    )
    adaptive_kl: bool = Field(
        default=False, description="Adapt kl_coef so the measured sequence KL tracks kl_target (Ziegler et al.)."
    )
    kl_target: float = Field(default=6.0, gt=0, description="Target sequence KL for adaptive_kl (nats).")
    kl_horizon: PositiveInt = Field(
        default=10_000, description="Horizon of the adaptive KL controller, in sampled sequences."
    )
    reference_policy: Literal["auto", "copy", "adapter", "none"] = Field(
        default="auto",
        description="Reference for the KL penalty: copy (frozen copy), adapter (LoRA adapter disabled; "
        "no second model), none (no KL penalty); auto: adapter with LoRA, else copy.",
    )

    # ------------------------------------------------------------- advantages
    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount factor over completion tokens.")
    lam: float = Field(default=0.95, ge=0, le=1, description="GAE lambda (bias-variance trade-off).")
    whiten_advantages: bool = Field(
        default=True, description="Normalise advantages to zero mean, unit variance over each rollout batch."
    )
    whiten_rewards: bool = Field(
        default=False, description="Scale per-token rewards to unit variance (mean kept) before GAE."
    )

    # ------------------------------------------------------------- optimisation
    ppo_epochs: PositiveInt = Field(default=4, description="Passes over each rollout batch.")
    num_minibatches: PositiveInt = Field(
        default=1,
        description="Minibatches per pass (one optimizer update each); must divide batch_size * num_generations.",
    )
    cliprange: float = Field(default=0.2, gt=0, description="Policy ratio clip range (epsilon).")
    cliprange_value: float = Field(default=0.2, gt=0, description="Value prediction clip range around the rollout's.")
    behaviour_is_cap: float = Field(
        default=2.0,
        gt=0,
        description="With a rollout server (sglang.base_url): cap C of the truncated importance weight "
        "min(exp(logp_policy - logp_server), C) that multiplies each token's policy loss (docs/rollouts.md).",
    )
    vf_coef: float = Field(default=0.1, ge=0, description="Weight of the value loss in the total loss.")
    loss: str = Field(
        default="clipped", description="Registered PPO policy loss (algorithm 'ppo'); 'clipped' is PPO-clip."
    )
    loss_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the loss.")
    loss_arguments_set_by_flux: ClassVar[dict[str, str]] = {"cliprange": "algorithm.cliprange"}
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip the global gradient norm to this (None: no clipping)."
    )
    lr_scheduler: Literal["linear", "constant"] = Field(
        default="linear", description="linear: decay the learning rate to 0 over num_steps; constant: keep it."
    )
    adam_epsilon: float = Field(default=1e-5, gt=0, description="Adam epsilon (1e-5 as in OpenAI's PPO code).")
    fp32_lm_head: bool = Field(
        default=True,
        description="With precision bf16/fp16: compute the policy's and the reference's logits in fp32 (the LM "
        "head's input cast up, autocast off inside it), so sampling, log-probs, ratios and the KL read full-precision "
        "logits (docs/ppo.md, Mixed precision). No effect in fp32.",
    )

    # ------------------------------------------------------------- value model
    value_model: str | None = Field(
        default=None,
        description="None: a copy of the policy's trunk with a new scalar head; or a model directory "
        "(a causal LM, or a sequence-classification model such as the reward model, whose head is kept).",
    )
    value_learning_rate: float | None = Field(
        default=None, gt=0, description="Learning rate of the value model (None: the run's learning_rate)."
    )
    value_lora: bool = Field(
        default=False,
        description="Train the value model's trunk through a LoRA adapter with the run's lora: settings "
        "(its scalar head is always trained fully); no effect without a lora: block.",
    )

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, loss: str) -> str:
        try:
            get_registry().get_loss(loss, "ppo")
        except FluxError as error:  # as a ValueError it is reported as `file:line: algorithm.loss: ...`
            raise ValueError(str(error)) from None
        return loss

    @model_validator(mode="after")
    def _check(self) -> PPOAlgorithmConfig:
        if not self.rewards and self.reward_model is None:
            raise ValueError(
                "PPO needs a reward: list rewards: [{name: ..., kwargs: {...}}] and/or set reward_model: DIR "
                "(see `flux plugins` for reward names)"
            )
        check_unique_labels(self.reward_specs)
        return self

    @property
    def reward_specs(self) -> list[RewardSpec]:
        """``rewards`` plus ``reward_model`` as one more ``{model: DIR}`` entry."""
        extra = [RewardSpec(model=self.reward_model)] if self.reward_model is not None else []
        return list(self.rewards) + extra

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on a PPO run."""
        messages = []
        if self.reference_policy == "none" and self.kl_coef > 0:
            messages.append("algorithm.kl_coef has no effect with reference_policy: none (no KL penalty)")
        if self.value_lora and config.lora is None:
            messages.append("algorithm.value_lora: true has no effect without a lora: block")
        if config.adaptive_async.enabled:
            messages.append("PPO trains on-policy: adaptive_async is ignored")
        if config.compile:
            messages.append("compile: true is not applied by PPO's own training loop (TRL-based algorithms only)")
        if self.seed_per_prompt and config.sglang.base_url:
            messages.append(
                "algorithm.seed_per_prompt seeds local generation only: the rollout server samples as it does"
            )
        return messages
