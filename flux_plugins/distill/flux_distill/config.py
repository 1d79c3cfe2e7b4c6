"""The ``algorithm:`` block of a distillation run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from flux_core import SHARED_OWNED_TRL_FIELDS, AlgorithmConfig, ConfigError, looks_local

_OWN = "is set by Flux: use "
# DistillationConfig fields that Flux sets from its own keys; a `trl:` block may not set them.
FLUX_OWNED_TRL_FIELDS = {
    **SHARED_OWNED_TRL_FIELDS,
    "beta": _OWN + "algorithm.beta",
    "temperature": _OWN + "algorithm.temperature",
    "top_p": _OWN + "algorithm.top_p",
    "max_completion_length": _OWN + "algorithm.max_completion_length",
    "teacher_model_name_or_path": _OWN + "algorithm.teacher",
}


class DistillAlgorithmConfig(AlgorithmConfig):
    """Settings of ``algorithm: {name: distill, ...}``; other DistillationConfig fields go in the ``trl:`` block."""

    name: Literal["distill"] = Field(description="Selects on-policy knowledge distillation (package flux-distill).")
    teacher: str = Field(
        description="The teacher: a model directory (e.g. a larger fine-tuned model's final/) or hub id. It must "
        "share the student's vocabulary (model_path is the student); it is loaded in the run's precision and "
        "never trained."
    )
    beta: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Which divergence the student minimises to the teacher, per token: 0 forward KL (cover the "
        "teacher's modes), 1 reverse KL (TRL's default; mode seeking, as in on-policy distillation), values "
        "between the generalized Jensen-Shannon divergence (0.5 = JSD).",
    )
    temperature: float = Field(
        default=1.0,
        gt=0,
        description="Temperature of the student's sampling and of both distributions in the loss (> 0).",
    )
    top_p: float = Field(
        default=1.0, gt=0, le=1, description="Nucleus sampling threshold in (0, 1] of the student's samples."
    )
    max_completion_length: PositiveInt = Field(
        default=512, description="Most tokens the student generates per prompt (the tokens the loss is taken on)."
    )

    flux_owned_trl_fields: ClassVar[dict[str, str]] = FLUX_OWNED_TRL_FIELDS

    @field_validator("teacher")
    @classmethod
    def _teacher_exists(cls, teacher: str) -> str:
        path = Path(teacher).expanduser()
        if looks_local(teacher) and not path.is_dir():  # a typo fails now, not after the student loads
            raise ValueError(
                f"'{teacher}': {'a file, not a model directory' if path.exists() else 'directory not found'}"
            )
        return teacher

    def steps_per_epoch(self, config: Any, num_examples: int, world_size: int) -> int:
        """Optimizer steps in one pass over ``num_examples`` prompts, as TRL's DistillationTrainer runs them:
        one generation batch of ``batch_size x trl.gradient_accumulation_steps x processes`` prompts per step,
        the prompts left over after the last whole batch dropped (TRL's ``RepeatSampler``)."""
        per_step = config.batch_size * config.trl.get("gradient_accumulation_steps", 1) * world_size
        if num_examples < per_step:
            raise ConfigError(
                f"num_epochs: the data has {num_examples} prompts, fewer than one step's {per_step} (batch_size "
                f"{config.batch_size} x trl.gradient_accumulation_steps x {world_size} processes); use num_steps, or "
                "more prompts"
            )
        return num_examples // per_step

    def warnings_for(self, config: Any) -> list[str]:
        """Settings that are valid but probably not what the user meant."""
        messages = []
        if config.adaptive_async.enabled or config.sglang.base_url:
            messages.append(
                "distill samples with the student in the training process: sglang and adaptive_async are ignored"
            )
        if config.max_length != type(config).model_fields["max_length"].default:
            messages.append(
                "max_length is not used by distill: completions are capped by algorithm.max_completion_length "
                "and prompts are not truncated"
            )
        return messages
