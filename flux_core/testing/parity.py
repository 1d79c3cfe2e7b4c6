"""The raw-TRL side of a parity test: an unmodified TRL trainer on the same model, data and settings as a
Flux run, so a test can show a wrapper adds no change of its own (per-step losses equal within 1e-5)."""

from __future__ import annotations

from typing import Any


def raw_trl_args(config_class: Any, config: Any, steps: int, **fields: Any) -> Any:
    """``config_class`` (e.g. ``trl.KTOConfig``) with a Flux test config's settings, ``fields`` on top.
    ``config`` is a ``FluxConfig``, or a config dict as ``run_flux`` takes it (the same defaults fill it).

    fp32 and no gradient checkpointing unless ``fields`` say otherwise: TRL's configs default to
    bf16 and checkpointing, while the tests pin fp32 and Flux resolves ``gradient_checkpointing:
    auto`` to off for a tiny model. The GPU when there is one, as Flux does; one log per step.
    """
    import torch

    if isinstance(config, dict):
        from flux_core.config import FluxConfig
        from flux_core.testing.runs import TINY_RUN

        config = FluxConfig.from_dict({**TINY_RUN, **config})
    settings = {
        "output_dir": config.output_dir + "-trl",
        "max_steps": steps,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "max_length": config.max_length,
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
    }
    return config_class(**{**settings, **fields})


def raw_trl_losses(
    trainer_class: Any,
    args: Any,
    model: Any,
    model_path: str,
    records: list[dict],
    lora: bool,
    **lora_settings: Any,
) -> list[float]:
    """Per-step training losses of ``trainer_class`` (e.g. ``trl.DPOTrainer``) with ``args`` on ``records``;
    ``lora``: the same LoRA adapter Flux's tests use (r 4, alpha 8, all linear layers), with ``lora_settings``
    (other ``LoraConfig`` fields, e.g. a reward model's ``task_type="SEQ_CLS"``) on top."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    settings = {"task_type": "CAUSAL_LM", **lora_settings}
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", **settings)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=peft_config if lora else None,
    )
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]
