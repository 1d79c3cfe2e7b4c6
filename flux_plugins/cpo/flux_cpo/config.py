"""The ``algorithm:`` block of a CPO run (and of SimPO: ``loss_type: simpo``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# Every loss TRL 1.16's CPOTrainer implements (CPOConfig.loss_type).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo", "alphapo")
# Losses that subtract the SimPO target margin (TRL's alphapo is simpo with the AlphaPO reward shape).
SIMPO_LOSSES = ("simpo", "alphapo")
# Losses whose TRL formula reads label_smoothing; TRL ignores it for the others (Flux warns).
USES_LABEL_SMOOTHING = ("sigmoid", "simpo", "alphapo")

_OWN = "is set by Flux: use "
# CPOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": _OWN + "max_length",
    "dataset_num_proc": _OWN + "dataset_num_proc",
    "beta": _OWN + "algorithm.beta",
    "loss_type": _OWN + "algorithm.loss_type",
    "label_smoothing": _OWN + "algorithm.label_smoothing",
    "cpo_alpha": _OWN + "algorithm.cpo_alpha",
    "simpo_gamma": _OWN + "algorithm.simpo_gamma",
    "alpha": _OWN + "algorithm.alpha",
    "remove_unused_columns": "is set by Flux: CPO's pair collator needs every column",
}


class CPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: cpo, ...}``; other CPOConfig fields go in the ``trl:`` block."""

    name: Literal["cpo"] = Field(
        description="Selects Contrastive Preference Optimization (package flux-cpo); with loss_type: simpo it is "
        "SimPO. Both are reference-free."
    )
    loss_type: Literal[LOSS_TYPES] = Field(  # type: ignore[valid-type]
        default="sigmoid",
        description="sigmoid: CPO (DPO's loss on policy log-probs, no reference); simpo: SimPO (length-normalised "
        "log-probs and a target margin simpo_gamma); hinge: SLiC's hinge loss; ipo: IPO's squared loss on "
        "length-normalised log-probs; alphapo: AlphaPO (SimPO with the reward shape set by alpha).",
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="Scale of the log-prob difference in the loss (ipo: its regularisation tau). SimPO's paper "
        "used 2.0 to 10.",
    )
    cpo_alpha: float | None = Field(
        default=None,
        ge=0,
        description="Weight of the SFT (NLL on chosen) term. Default: 1.0 for sigmoid, hinge and ipo (CPO), 0 for "
        "simpo and alphapo (SimPO and AlphaPO as their papers define them); a value > 0 with simpo is CPO-SimPO.",
    )
    simpo_gamma: float = Field(
        default=0.5,
        ge=0,
        description="SimPO's target reward margin (gamma; the loss subtracts gamma/beta); used by simpo and alphapo.",
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="Probability that a preference label is flipped (conservative loss); read by sigmoid, simpo "
        "and alphapo.",
    )
    alpha: float = Field(
        default=0.0,
        description="AlphaPO's reward shape: 0 uses log-probs; otherwise the reward is (1 - p^-alpha)/alpha. "
        "Applies to every loss_type.",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    @property
    def sft_weight(self) -> float:
        """``cpo_alpha`` as the run uses it (its default depends on loss_type)."""
        if self.cpo_alpha is not None:
            return self.cpo_alpha
        return 0.0 if self.loss_type in SIMPO_LOSSES else 1.0

    @model_validator(mode="after")
    def _check(self) -> "CPOAlgorithmConfig":
        if self.loss_type == "alphapo" and self.cpo_alpha:
            raise ValueError(
                f"loss_type alphapo has no SFT term (TRL sets cpo_alpha to 0): drop cpo_alpha: {self.cpo_alpha}, "
                "or use loss_type: simpo with alpha for AlphaPO plus an SFT term"
            )
        return self

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on this run."""
        messages = []
        if self.label_smoothing > 0 and self.loss_type not in USES_LABEL_SMOOTHING:
            messages.append(
                f"algorithm.label_smoothing={self.label_smoothing} has no effect with loss_type {self.loss_type} "
                f"(as in TRL 1.16); losses that use it: {', '.join(USES_LABEL_SMOOTHING)}"
            )
        if "simpo_gamma" in self.model_fields_set and self.loss_type not in SIMPO_LOSSES:
            messages.append(
                f"algorithm.simpo_gamma has no effect with loss_type {self.loss_type}: only simpo and alphapo use it"
            )
        if self.loss_type == "alphapo" and self.alpha == 0:
            messages.append("loss_type alphapo with alpha 0 is SimPO: set algorithm.alpha for AlphaPO's reward shape")
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            messages.append("CPO has no rollouts: adaptive_async.enabled is ignored")
        return messages
