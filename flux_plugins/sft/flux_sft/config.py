"""The ``algorithm:`` block of an SFT run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig

# SFTConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "max_length": "is set by Flux: use max_length",
    "dataset_num_proc": "is set by Flux: use dataset_num_proc",
    "completion_only_loss": "is set by Flux: use algorithm.completion_only_loss",
    "assistant_only_loss": "is set by Flux: use algorithm.assistant_only_loss",
    "packing": "is set by Flux: use algorithm.packing",
    "dataset_text_field": "is set by Flux: map your column onto 'text' with data: {path: ..., columns: {text: COLUMN}}",
}


class SFTAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: sft, ...}``; other SFTConfig fields go in the ``trl:`` block."""

    name: Literal["sft"] = Field(description="Selects supervised fine-tuning (package flux-sft).")
    completion_only_loss: bool = Field(
        default=True,
        description="For prompt + completion data: loss on the completion tokens only (the prompt is context); "
        "false: on every token.",
    )
    assistant_only_loss: bool | Literal["auto"] = Field(
        default="auto",
        description="For messages data: loss on the assistant turns only. auto: on when the chat template marks "
        "assistant turns ({% generation %}) or TRL ships a training version of it, else off with a warning; "
        "true: required (an error when the template cannot); false: loss on every token of the conversation.",
    )
    packing: bool = Field(
        default=False,
        description="TRL's packing: several examples share each row of up to max_length tokens (best-fit, "
        "no attention across examples), so little compute goes to padding.",
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but have no effect on an SFT run."""
        if config.adaptive_async.enabled:  # the sglang block only says where a server is: harmless to carry
            return ["SFT has no rollouts: adaptive_async.enabled is ignored"]
        return []
