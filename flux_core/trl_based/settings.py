"""TRL config settings that every Flux runner wrapping a TRL trainer shares."""

from __future__ import annotations

from typing import Any

_CHECKPOINTS = "has no effect: Flux writes its own checkpoints (checkpoint.save_steps) and picks best/ itself"

# TRL config fields that are Flux's, with the message a `trl:` block setting one gets. Three kinds:
# fields shared_trl_settings writes (a `trl:` value would replace Flux's), their aliases (TRL's
# activation_checkpointing replaces gradient_checkpointing), and fields Flux's settings make inert
# (max_steps overrides num_train_epochs; save_strategy "no" turns off TRL's own checkpointing).
# tests/trl_based/test_settings.py builds every installed algorithm's TRL config and checks that each
# field Flux writes is listed (here or in its plugin's flux_owned_trl_fields).
SHARED_OWNED_TRL_FIELDS = {
    "output_dir": "is set by Flux: use output_dir",
    "max_steps": "is set by Flux: use num_steps",
    "num_train_epochs": "is set by Flux: use num_epochs",
    "per_device_train_batch_size": "is set by Flux: use batch_size",
    "per_device_eval_batch_size": "is set by Flux: use batch_size",
    "learning_rate": "is set by Flux: use learning_rate",
    "seed": "is set by Flux: use seed",
    "gradient_checkpointing": "is set by Flux: use gradient_checkpointing",
    "activation_checkpointing": "is set by Flux: use gradient_checkpointing",
    "torch_compile": "is set by Flux: use compile",
    "bf16": "is set by Flux: use precision",
    "fp16": "is set by Flux: use precision",
    "use_cpu": "is set by Flux from the available hardware",
    "logging_steps": "is set by Flux: step callbacks need one log per optimizer step",
    "logging_strategy": "is set by Flux: step callbacks need one log per optimizer step",
    "report_to": "is set by Flux: use report_to",
    "run_name": "is set by Flux: use run_name",
    "logging_nan_inf_filter": "is set by Flux: a NaN/Inf loss is reported as it is and handled by on_nonfinite",
    "disable_tqdm": "is set by Flux: it shows its own progress bar",
    "resume_from_checkpoint": "is not how Flux resumes: use `flux train CONFIG --resume` (or fit(resume=True))",
    "save_strategy": "is set by Flux: it writes its own checkpoints; use checkpoint.save_steps",
    "save_steps": "is set by Flux: use checkpoint.save_steps",
    "save_total_limit": _CHECKPOINTS,
    "save_only_model": _CHECKPOINTS,
    "save_on_each_node": _CHECKPOINTS,
    "load_best_model_at_end": _CHECKPOINTS,
    "metric_for_best_model": _CHECKPOINTS,
    "greater_is_better": _CHECKPOINTS,
    "push_to_hub": "is Flux's: use the top-level push_to_hub (uploads best/ with its model card)",
}


def shared_trl_settings(config: Any, precision: str, gradient_checkpointing: bool) -> dict[str, Any]:
    """Flux's top-level keys and run conventions as TRL/transformers config fields.

    Runners add their algorithm's fields, then ``config.trl`` (checked to be real
    fields when the config loaded) on top. ``gradient_checkpointing`` is the resolved
    ``config.gradient_checkpointing`` (see :mod:`flux_core.trl_based.memory`).
    """
    import torch

    from flux_core.report.trackers import run_name_of

    return dict(
        gradient_checkpointing=gradient_checkpointing,
        torch_compile=config.compile,
        output_dir=config.output_dir,
        max_steps=config.num_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        logging_strategy="steps",
        logging_steps=1,  # one StepResult per optimizer step
        # transformers would log a NaN/Inf step loss as the window's average (0.0 right after a log)
        logging_nan_inf_filter=False,
        save_strategy="no",  # Flux writes its own atomic checkpoints
        report_to=[name for name in config.report_to if name != "none"] or "none",
        run_name=run_name_of(config),
        disable_tqdm=True,  # Flux shows its own progress bar
    )


def build_trl_config(
    trl_class: type,
    config: Any,
    precision: str,
    model: Any,
    *,
    sequences: int,
    extra_model_copies: int,
    **algorithm_fields: Any,
) -> Any:
    """``trl_class`` (e.g. ``DPOConfig``) for a Flux run: the shared settings, then the algorithm's
    fields, then the ``trl:`` block on top.

    ``gradient_checkpointing`` is resolved here (:mod:`flux_core.trl_based.memory`) for ``sequences``
    sequences of ``max_length`` tokens per step and ``extra_model_copies`` frozen models.
    """
    from flux_core.trl_based.memory import use_gradient_checkpointing

    checkpointing = use_gradient_checkpointing(
        config.gradient_checkpointing,
        model,
        sequences=sequences,
        tokens_per_sequence=config.max_length or 1024,
        extra_model_copies=extra_model_copies,
        lora=config.lora,
    )
    return trl_class(**{**shared_trl_settings(config, precision, checkpointing), **algorithm_fields, **config.trl})
