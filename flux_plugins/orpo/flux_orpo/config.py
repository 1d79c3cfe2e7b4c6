"""The ``algorithm:`` block of an ORPO run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# ORPOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": "is set by Flux: use max_length",
    "dataset_num_proc": "is set by Flux: use dataset_num_proc",
    "beta": "is set by Flux: use algorithm.beta (ORPO's lambda)",
    "remove_unused_columns": "is set by Flux: ORPO's pair collator needs every column",
}


class ORPOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: orpo, ...}``; other ORPOConfig fields go in the ``trl:`` block."""

    name: Literal["orpo"] = Field(
        description="Selects Odds Ratio Preference Optimization (package flux-orpo): SFT on the chosen completion "
        "plus an odds-ratio preference term, with no reference model."
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="Weight of the odds-ratio term against the SFT loss (lambda in the ORPO paper; 0.1 standard, "
        "the paper used 0.1 to 0.25).",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on an ORPO run."""
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            return ["ORPO has no rollouts: adaptive_async.enabled is ignored"]
        return []
