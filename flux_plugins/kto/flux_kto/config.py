"""The ``algorithm:`` block of a KTO run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# KTOConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": "is set by Flux: use max_length",
    "dataset_num_proc": "is set by Flux: use dataset_num_proc",
    "beta": "is set by Flux: use algorithm.beta",
    "desirable_weight": "is set by Flux: use algorithm.desirable_weight",
    "undesirable_weight": "is set by Flux: use algorithm.undesirable_weight",
}


class KTOAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: kto, ...}``; other KTOConfig fields go in the ``trl:`` block."""

    name: Literal["kto"] = Field(description="Selects Kahneman-Tversky Optimization (package flux-kto).")
    beta: float = Field(
        default=0.1, gt=0, description="Strength of the pull towards the reference (0.1 standard; higher = stronger)."
    )
    desirable_weight: float = Field(
        default=1.0,
        gt=0,
        description="Weight of the loss on desirable (label: true) examples; raise it when they are the minority.",
    )
    undesirable_weight: float = Field(
        default=1.0,
        gt=0,
        description="Weight of the loss on undesirable (label: false) examples; raise it when they are the minority.",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on a KTO run."""
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            return ["KTO has no rollouts: adaptive_async.enabled is ignored"]
        return []
