"""The ``algorithm:`` block of a DPO run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# DPOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": "is set by Flux: use max_length",
    "beta": "is set by Flux: use algorithm.beta",
    "label_smoothing": "is set by Flux: use algorithm.label_smoothing",
    "loss_type": "is set by Flux: use algorithm.loss",
    "loss_weights": "is not supported: register a custom loss that combines others (see 'Write a plugin')",
    "precompute_ref_log_probs": "is set by Flux: use algorithm.reference_policy: precompute",
    "dataset_num_proc": "is set by Flux: use dataset_num_proc",
    "f_divergence_type": "is not supported: register a custom loss instead",
    "use_weighting": "is not supported: register a custom loss instead",
    "ld_alpha": "is not supported: register a custom loss instead",
    "discopop_tau": "is set by Flux: use algorithm.loss_kwargs: {tau: ...} with loss: discopop",
    "padding_free": "is disabled in TRL 1.16's DPO: use algorithm.collation: packed",
}


class DPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: dpo, ...}``."""

    name: Literal["dpo"] = Field(description="Selects Direct Preference Optimization (package flux-dpo).")
    beta: float = Field(
        default=0.1, gt=0, description="Strength of the pull towards the reference (0.1 standard; higher = stronger)."
    )
    reference_free: bool = Field(
        default=False, description="Use no reference model at all (a zero reference); simpler but less stable."
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="Probability that a preference label is flipped; read by losses robust, exo_pair, aot, aot_unpaired.",
    )
    loss: str = Field(default="sigmoid", description="Registered DPO loss to use (TRL's names, or a plugin's).")
    loss_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the loss.")
    reference_policy: Literal["auto", "copy", "adapter", "precompute", "none"] = Field(
        default="auto",
        description=(
            "How reference log-probs are obtained: copy (frozen copy), adapter (LoRA disabled), precompute "
            "(one cached pass before training), none (reference-free); auto: precompute when each example is "
            "seen more than once, else adapter with LoRA, else copy."
        ),
    )
    collation: Literal["auto", "padded", "packed"] = Field(
        default="auto",
        description=(
            "padded: TRL's padded batches; packed: one row per batch with no padding, sequences separated by "
            "restarting position_ids (same losses; on CUDA with flash-attention varlen if flash-attn is installed, "
            "else FlexAttention); auto: packed on CUDA with flash-attn installed, padded elsewhere."
        ),
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS
    loss_arguments_set_by_flux: ClassVar[dict[str, str]] = {
        "beta": "algorithm.beta",
        "label_smoothing": "algorithm.label_smoothing",
    }

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, loss: str) -> str:
        from flux_core import FluxError, get_registry

        try:
            get_registry().get_loss(loss, "dpo")
        except FluxError as error:  # pydantic reports ValueErrors with their key path
            raise ValueError(str(error)) from None
        return loss

    @model_validator(mode="after")
    def _check(self) -> "DPOAlgorithmConfig":
        if self.reference_free and self.reference_policy not in ("auto", "none"):
            raise ValueError(
                f"reference_free: true contradicts reference_policy: {self.reference_policy}; drop one of them"
            )
        if self.loss == "exo_pair" and self.label_smoothing == 0:
            raise ValueError("loss exo_pair needs label_smoothing > 0 (its epsilon; the paper suggests 1e-3)")
        return self

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on a DPO run."""
        from flux_dpo.losses import TRL_LOSSES, USES_LABEL_SMOOTHING

        messages = []
        if self.label_smoothing > 0 and self.loss in TRL_LOSSES and self.loss not in USES_LABEL_SMOOTHING:
            messages.append(
                f"algorithm.label_smoothing={self.label_smoothing} has no effect with loss '{self.loss}' "
                f"(as in TRL 1.16); losses that use it: {', '.join(sorted(USES_LABEL_SMOOTHING))}"
            )
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            messages.append("DPO has no rollouts: adaptive_async.enabled is ignored")
        return messages
