"""The raw-TRL side of the parity tests: an unmodified TRL trainer on the same model and data."""

from __future__ import annotations

from typing import Any


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
